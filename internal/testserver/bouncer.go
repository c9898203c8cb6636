package testserver

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// BouncerModes are PgBouncer's pool modes: the Bouncer has one database
// of each name, pool_mode=name, pool_size=4, in front of the postgres
// database of its server.
var BouncerModes = []string{"session", "transaction", "statement"}

// Bouncer is a PgBouncer (1.18 on Debian 12) on 127.0.0.1 in front of a
// Postgres. Its configuration is stock but for the databases
// (BouncerModes), trust authentication and max_client_conn=200; in
// particular it has no ignore_startup_parameters. As root it runs as the
// postgres user (PgBouncer refuses to run as root).
type Bouncer struct {
	Addr string // host:port

	dir    string
	cmd    *exec.Cmd
	exited chan struct{}
}

// URL returns the connection string of the database (pool) mode.
func (b *Bouncer) URL(mode string) string {
	return fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", b.Addr, mode)
}

// StartBouncer starts a PgBouncer in front of pg. Stop stops it.
func StartBouncer(pg *Postgres) (*Bouncer, error) {
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/pgbouncer"); serr != nil {
			return nil, NotInstalled("pgbouncer", "pgbouncer", err)
		}
		bin = "/usr/sbin/pgbouncer"
	}
	dir, err := os.MkdirTemp("", "testserver-pgbouncer-")
	if err != nil {
		return nil, err
	}
	asPostgres, err := asPostgresUser(dir)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "users.txt"), []byte(`"postgres" ""`+"\n"), 0o644)
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	host, port, _ := net.SplitHostPort(pg.Addr)
	var dbs string
	for _, mode := range BouncerModes {
		dbs += fmt.Sprintf("%s = host=%s port=%s dbname=postgres user=postgres pool_mode=%s pool_size=4\n", mode, host, port, mode)
	}
	for attempt := 1; ; attempt++ {
		listen, err := FreePort()
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		ini := fmt.Sprintf(`[databases]
%s
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
logfile = %s
max_client_conn = 200
`, dbs, listen, filepath.Join(dir, "users.txt"), filepath.Join(dir, "log"))
		conf := filepath.Join(dir, "pgbouncer.ini")
		if err := os.WriteFile(conf, []byte(ini), 0o644); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		cmd := exec.Command(bin, conf)
		if asPostgres {
			cmd = exec.Command("runuser", "-u", "postgres", "--", bin, conf)
		}
		// runuser forks: on SIGTERM it ends its child, on SIGKILL it
		// would leave it running.
		cmd.SysProcAttr = dieWithParent(syscall.SIGTERM)
		if err := cmd.Start(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		b := &Bouncer{Addr: fmt.Sprintf("127.0.0.1:%d", listen), dir: dir, cmd: cmd, exited: make(chan struct{})}
		go func() { cmd.Wait(); close(b.exited) }()
		err = waitListening(b.Addr, b.exited)
		if err == nil {
			return b, nil
		}
		b.kill()
		if attempt == attempts {
			log, _ := os.ReadFile(filepath.Join(dir, "log"))
			os.RemoveAll(dir)
			return nil, fmt.Errorf("pgbouncer: %v\n%s", err, log)
		}
	}
}

// kill ends the PgBouncer: SIGTERM (runuser passes it on to PgBouncer,
// which then exits at once), SIGKILL after 5 s or where there is no
// SIGTERM.
func (b *Bouncer) kill() {
	if b.cmd.Process.Signal(syscall.SIGTERM) == nil {
		select {
		case <-b.exited:
			return
		case <-time.After(5 * time.Second):
		}
	}
	b.cmd.Process.Kill()
	<-b.exited
}

// Stop ends the PgBouncer and removes its directory.
func (b *Bouncer) Stop() {
	b.kill()
	os.RemoveAll(b.dir)
}

// waitListening waits up to 10 s until something accepts connections at
// addr, or exited is closed.
func waitListening(addr string, exited <-chan struct{}) error {
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		select {
		case <-exited:
			return errors.New("exited at start")
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
	}
}
