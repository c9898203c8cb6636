package testserver

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
)

// Postgres is a throwaway PostgreSQL server: a cluster made by initdb in a
// temporary directory (trust authentication, superuser postgres), started
// by pg_ctl on 127.0.0.1 with fsync off and max_connections=200. As root,
// initdb and the server run as the postgres user, which owns the
// directory.
type Postgres struct {
	Addr string // host:port
	URL  string // postgres://postgres@Addr/postgres?sslmode=disable

	bin, dir   string
	asPostgres bool
	env        []string
}

// PostgresBin returns the directory of initdb and pg_ctl: $PGLOCK_PG_BIN
// when set, else the newest /usr/lib/postgresql/N/bin (Debian's layout),
// else the directory of initdb on PATH. Its error matches ErrNotInstalled.
func PostgresBin() (string, error) {
	if d := os.Getenv("PGLOCK_PG_BIN"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	version := func(bin string) int {
		n, _ := strconv.Atoi(filepath.Base(filepath.Dir(bin)))
		return n
	}
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	p, err := exec.LookPath("initdb")
	if err != nil {
		return "", NotInstalled("PostgreSQL (no initdb in /usr/lib/postgresql/*/bin or on PATH)", "postgresql-15", err)
	}
	return filepath.Dir(p), nil
}

// StartPostgres makes and starts a server; env is added to the server's
// environment (for example LD_PRELOAD of libfaketime). Stop removes it.
func StartPostgres(env ...string) (*Postgres, error) {
	bin, err := PostgresBin()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "testserver-pg-")
	if err != nil {
		return nil, err
	}
	p := &Postgres{bin: bin, dir: dir, env: env}
	if p.asPostgres, err = asPostgresUser(dir); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if out, err := p.run("initdb", "-D", p.data(), "-A", "trust", "-U", "postgres", "-N", "-E", "UTF8"); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	for attempt := 1; ; attempt++ {
		port, err := FreePort()
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", port, dir)
		out, err := p.run("pg_ctl", "-D", p.data(), "-o", opts, "-l", p.log(), "-w", "-t", "60", "start")
		if err == nil {
			p.Addr = fmt.Sprintf("127.0.0.1:%d", port)
			p.URL = fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", p.Addr)
			return p, nil
		}
		if attempt == attempts { // the port may have been taken meanwhile
			log, _ := os.ReadFile(p.log())
			os.RemoveAll(dir)
			return nil, fmt.Errorf("pg_ctl start: %v\n%s\n%s", err, out, log)
		}
	}
}

func (p *Postgres) data() string { return filepath.Join(p.dir, "data") }
func (p *Postgres) log() string  { return filepath.Join(p.dir, "log") }

// run runs one of the server's programs in its directory, as the postgres
// user when the tests run as root.
func (p *Postgres) run(tool string, args ...string) ([]byte, error) {
	path := filepath.Join(p.bin, tool)
	cmd := exec.Command(path, args...)
	if p.asPostgres {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	}
	cmd.Dir = p.dir
	cmd.Env = append(os.Environ(), p.env...)
	return cmd.CombinedOutput()
}

// Restart restarts the server on the same port (fast shutdown: every
// session is ended).
func (p *Postgres) Restart() error {
	out, err := p.run("pg_ctl", "-D", p.data(), "-l", p.log(), "-m", "fast", "-w", "-t", "60", "restart")
	if err != nil {
		return fmt.Errorf("pg_ctl restart: %v\n%s", err, out)
	}
	return nil
}

// Stop stops the server (immediate shutdown) and removes its directory.
func (p *Postgres) Stop() {
	p.run("pg_ctl", "-D", p.data(), "-m", "immediate", "-w", "stop")
	os.RemoveAll(p.dir)
}

// Libfaketime returns the path of Debian's libfaketime, to start a server
// whose clock a test steps (StartPostgres("LD_PRELOAD="+path, ...)). Its
// error matches ErrNotInstalled.
func Libfaketime() (string, error) {
	m, _ := filepath.Glob("/usr/lib/*/faketime/libfaketime.so.1")
	if len(m) == 0 {
		return "", NotInstalled("libfaketime", "libfaketime", errors.New("no /usr/lib/*/faketime/libfaketime.so.1"))
	}
	return m[0], nil
}
