package pglock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock/internal/proctest"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// The tests run against a throwaway PostgreSQL that TestMain starts on a
// free port of 127.0.0.1, in a temporary directory, and stops at the end.
// Without PostgreSQL binaries the tests skip with the reason, unless CI=true,
// where they fail. PGLOCK_PG_BIN names the directory of initdb and pg_ctl
// when they are neither in /usr/lib/postgresql/*/bin nor on PATH.
var (
	testSrv    *pgServer
	testDSN    string // the server's connection string; "" when absent
	testAddr   string // its host:port
	skipReason string
)

// Tests that need real processes re-run this test binary as a helper
// process (internal/proctest): helperCmd starts it with PGLOCK_HELPER=name,
// and TestMain runs helpers[name] instead of the tests.
var helpers = map[string]func(){}

const (
	helperEnv = "PGLOCK_HELPER"
	dsnEnv    = "PGLOCK_TEST_DSN"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		testDSN = os.Getenv(dsnEnv) // set by helperCmd
		proctest.RunHelper(helperEnv, helpers)
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	bin, err := postgresBin()
	if err != nil {
		if os.Getenv("CI") == "true" {
			fmt.Fprintf(os.Stderr, "pglock: CI=true but PostgreSQL is not installed: %v\n", err)
			return 1
		}
		skipReason = "PostgreSQL is not installed (apt-get install -y postgresql): " + err.Error()
		fmt.Println("pglock: tests that need PostgreSQL skip:", skipReason)
		return m.Run()
	}
	srv, err := startPostgres(bin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pglock: starting PostgreSQL: %v\n", err)
		return 1
	}
	defer srv.stop()
	testSrv, testDSN, testAddr = srv, srv.dsn, srv.addr
	defer stopBouncer()
	return m.Run()
}

// postgresBin finds the directory of initdb and pg_ctl, the newest version
// first.
func postgresBin() (string, error) {
	if d := os.Getenv("PGLOCK_PG_BIN"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	p, err := exec.LookPath("initdb")
	if err != nil {
		return "", err
	}
	return filepath.Dir(p), nil
}

func version(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

type pgServer struct {
	bin, dir, dsn, addr string
	asPostgres          bool
	env                 []string // added to the server's environment
}

// startPostgres runs initdb into a temporary directory and starts the
// server on a free loopback port. As root it runs both as the postgres
// user, which then owns the directory.
func startPostgres(bin string, env ...string) (*pgServer, error) {
	dir, err := os.MkdirTemp("", "pglock-test-")
	if err != nil {
		return nil, err
	}
	s := &pgServer{bin: bin, dir: dir, asPostgres: os.Geteuid() == 0, env: env}
	if s.asPostgres {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("running as root needs the postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	if out, err := s.run("initdb", "-D", data, "-A", "trust", "-U", "postgres", "-N", "-E", "UTF8"); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	for attempt := 0; ; attempt++ {
		port, err := freePort()
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", port, dir)
		out, err := s.run("pg_ctl", "-D", data, "-o", opts, "-l", filepath.Join(dir, "log"), "-w", "-t", "60", "start")
		if err == nil {
			s.addr = fmt.Sprintf("127.0.0.1:%d", port)
			s.dsn = fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", s.addr)
			return s, nil
		}
		if attempt == 2 {
			log, _ := os.ReadFile(filepath.Join(dir, "log"))
			os.RemoveAll(dir)
			return nil, fmt.Errorf("pg_ctl start: %v\n%s\n%s", err, out, log)
		}
	}
}

func (s *pgServer) run(tool string, args ...string) ([]byte, error) {
	path := filepath.Join(s.bin, tool)
	var cmd *exec.Cmd
	if s.asPostgres {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), s.env...)
	return cmd.CombinedOutput()
}

// restart restarts the server (fast shutdown: every session is ended) on
// the same port.
func (s *pgServer) restart() error {
	out, err := s.run("pg_ctl", "-D", filepath.Join(s.dir, "data"), "-l", filepath.Join(s.dir, "log"), "-m", "fast", "-w", "-t", "60", "restart")
	if err != nil {
		return fmt.Errorf("pg_ctl restart: %v\n%s", err, out)
	}
	return nil
}

func (s *pgServer) stop() {
	s.run("pg_ctl", "-D", filepath.Join(s.dir, "data"), "-m", "immediate", "-w", "stop")
	os.RemoveAll(s.dir)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// needPG skips the test when there is no server.
func needPG(t testing.TB) {
	t.Helper()
	if testDSN == "" {
		t.Skip(skipReason)
	}
}

// lockName returns a lock name no other test uses.
func lockName(t testing.TB) string {
	return fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano())
}

// newLocker returns a Locker on the test server that is unlocked when the
// test ends.
func newLocker(t testing.TB, name string, opts ...Option) *Locker {
	t.Helper()
	needPG(t)
	l, err := New(testDSN, name, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { l.Unlock() })
	return l
}

// admin opens a connection for the test's own statements.
func admin(t testing.TB) *pgx.Conn {
	t.Helper()
	needPG(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, testDSN)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// backendOf returns the server process that holds name's lock, 0 if none.
func backendOf(t testing.TB, c *pgx.Conn, name string) int {
	t.Helper()
	k := Key(name)
	var pid int32
	err := c.QueryRow(context.Background(), `SELECT pid FROM pg_locks WHERE locktype = 'advisory'
		AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1 AND granted`,
		int64(uint64(k)>>32), int64(uint64(k)&0xffffffff)).Scan(&pid)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0
	}
	require.NoError(t, err)
	return int(pid)
}

// terminate ends a server process with pg_terminate_backend.
func terminate(t testing.TB, c *pgx.Conn, pid int) {
	t.Helper()
	var ok bool
	require.NoError(t, c.QueryRow(context.Background(), `SELECT pg_terminate_backend($1)`, pid).Scan(&ok))
	require.True(t, ok, "pg_terminate_backend(%d)", pid)
}

// helperCmd returns a command that runs helpers[name] in a child process
// against the test server, with env added to the environment.
func helperCmd(t testing.TB, name string, env ...string) *exec.Cmd {
	t.Helper()
	return proctest.Command(helperEnv, name, append([]string{dsnEnv + "=" + testDSN}, env...)...)
}

// checkNoGoroutineLeak fails the test if goroutines of this module that
// started during the test still run when it ends (after a grace period).
func checkNoGoroutineLeak(t *testing.T) {
	t.Helper()
	proctest.CheckGoroutines(t, proctest.Goroutines(), func(stack string) bool {
		return strings.Contains(stack, "pglock.") || strings.Contains(stack, "pgx")
	})
}
