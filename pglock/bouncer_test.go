package pglock

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// The pooler tests run a real PgBouncer (Debian's pgbouncer package, 1.18
// on Debian 12) that the tests start on a free port of 127.0.0.1 in front
// of the test server, with one database per pool mode: "session",
// "transaction" and "statement", each a pool of at most 4 server
// connections to the test server's postgres database. The configuration is
// stock otherwise: no ignore_startup_parameters. Without pgbouncer the
// tests skip with the reason, unless CI=true, where they fail. As root it
// runs as the postgres user (PgBouncer refuses to run as root).
var (
	bouncerOnce sync.Once
	bouncerAddr string
	bouncerErr  error
	bouncerStop func()
)

// bouncerDSN returns the connection string of the pool with the given
// mode, starting PgBouncer on first use.
func bouncerDSN(t testing.TB, mode string) string {
	t.Helper()
	needPG(t)
	bouncerOnce.Do(func() { bouncerAddr, bouncerStop, bouncerErr = startBouncer() })
	if bouncerErr != nil {
		if os.Getenv("CI") != "true" && errorsIsNotFound(bouncerErr) {
			t.Skip(bouncerErr)
		}
		t.Fatal(bouncerErr)
	}
	return fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", bouncerAddr, mode)
}

type notFoundError struct{ error }

func errorsIsNotFound(err error) bool {
	var nf notFoundError
	return errors.As(err, &nf)
}

func stopBouncer() {
	if bouncerStop != nil {
		bouncerStop()
	}
}

func startBouncer() (string, func(), error) {
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/pgbouncer"); serr != nil {
			return "", nil, notFoundError{fmt.Errorf("pgbouncer is not installed (apt-get install -y pgbouncer): %w", err)}
		}
		bin = "/usr/sbin/pgbouncer"
	}
	dir, err := os.MkdirTemp("", "pglock-bouncer-")
	if err != nil {
		return "", nil, err
	}
	asRoot := os.Geteuid() == 0
	if asRoot {
		u, err := user.Lookup("postgres")
		if err != nil {
			return "", nil, err
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return "", nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "users.txt"), []byte(`"postgres" ""`+"\n"), 0o644); err != nil {
		return "", nil, err
	}
	host, port, _ := net.SplitHostPort(testAddr)
	for attempt := 1; ; attempt++ {
		listen, err := freePort()
		if err != nil {
			return "", nil, err
		}
		var dbs string
		for _, mode := range []string{"session", "transaction", "statement"} {
			dbs += fmt.Sprintf("%s = host=%s port=%s dbname=postgres user=postgres pool_mode=%s pool_size=4\n", mode, host, port, mode)
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
			return "", nil, err
		}
		cmd := exec.Command(bin, conf)
		if asRoot {
			cmd = exec.Command("runuser", "-u", "postgres", "--", bin, conf)
		}
		if err := cmd.Start(); err != nil {
			return "", nil, err
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		addr := fmt.Sprintf("127.0.0.1:%d", listen)
		stop := func() {
			cmd.Process.Kill()
			<-exited
			os.RemoveAll(dir)
		}
		if err := waitListening(addr, exited); err == nil {
			return addr, stop, nil
		} else if attempt == 3 {
			log, _ := os.ReadFile(filepath.Join(dir, "log"))
			stop()
			return "", nil, fmt.Errorf("pgbouncer: %v\n%s", err, log)
		}
		cmd.Process.Kill()
		<-exited
	}
}

// waitListening waits until something accepts connections at addr.
func waitListening(addr string, exited <-chan struct{}) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			return errors.New("exited at start")
		default:
		}
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}
