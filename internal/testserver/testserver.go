// Package testserver starts throwaway servers on loopback for the tests of
// every module of instancelock: PostgreSQL (initdb into a temporary
// directory, pg_ctl start), PgBouncer in front of it, and Redis, all from
// Debian's packages (postgresql-15, pgbouncer, redis-server), each on a
// free port of 127.0.0.1, without persistence.
//
// A test that needs a server calls a Shared function, which starts the
// server on first use in the test process, and hands its error to Need:
//
//	pg, err := testserver.SharedPostgres()
//	testserver.Need(t, err) // skips when PostgreSQL is not installed, fails under CI=true
//	url := pg.URL
//
// TestMain calls StopShared after m.Run. When a server's programs are not
// installed the error matches ErrNotInstalled and names the Debian package
// to install; under CI=true (.ci/run installs everything) that is a failure,
// elsewhere the test skips with that reason.
package testserver

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"strconv"
	"sync"
	"testing"
)

// ErrNotInstalled is matched by the error of a start when the server's
// programs are not installed.
var ErrNotInstalled = errors.New("not installed")

// NotInstalled returns the error of a missing program, matching
// ErrNotInstalled: what it is, the Debian package that has it, and the
// error that found it missing.
func NotInstalled(what, pkg string, err error) error {
	return fmt.Errorf("%s is %w (apt-get install -y %s): %v", what, ErrNotInstalled, pkg, err)
}

// InCI reports whether the tests run under CI=true, where a missing server
// is a failure, not a reason to skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Skippable reports whether a test (or a TestMain) may skip because of
// err: the server is not installed and the run is not CI.
func Skippable(err error) bool { return errors.Is(err, ErrNotInstalled) && !InCI() }

// Need does nothing when err is nil, skips tb with err as the reason when
// Skippable(err), and fails tb with err otherwise.
func Need(tb testing.TB, err error) {
	tb.Helper()
	switch {
	case err == nil:
	case Skippable(err):
		tb.Skip(err)
	case errors.Is(err, ErrNotInstalled):
		tb.Fatalf("CI=true but %v", err)
	default:
		tb.Fatal(err)
	}
}

// Shared servers: one of each per test process, started on first use.
var (
	sharedMu sync.Mutex // guards the values for StopShared
	sharedPG shared[*Postgres]
	sharedRD shared[*Redis]
	sharedPB shared[*Bouncer]
)

// shared is a server started once, on first use.
type shared[T any] struct {
	once sync.Once
	v    T
	err  error
}

func (s *shared[T]) get(start func() (T, error)) (T, error) {
	s.once.Do(func() {
		v, err := start()
		sharedMu.Lock()
		s.v, s.err = v, err
		sharedMu.Unlock()
	})
	return s.v, s.err
}

// SharedPostgres returns the process's PostgreSQL, started on first use
// (StartPostgres()). A failed start is not tried again.
func SharedPostgres() (*Postgres, error) {
	return sharedPG.get(func() (*Postgres, error) { return StartPostgres() })
}

// SharedRedis returns the process's Redis, started on first use
// (StartRedis). Tests may Stop, Start, Pause and Resume it.
func SharedRedis() (*Redis, error) { return sharedRD.get(StartRedis) }

// SharedBouncer returns the process's PgBouncer in front of
// SharedPostgres, started on first use (StartBouncer).
func SharedBouncer() (*Bouncer, error) {
	return sharedPB.get(func() (*Bouncer, error) {
		pg, err := SharedPostgres()
		if err != nil {
			return nil, err
		}
		return StartBouncer(pg)
	})
}

// StopShared stops the shared servers that were started and removes their
// directories. TestMain calls it after m.Run.
func StopShared() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedPB.v != nil {
		sharedPB.v.Stop()
	}
	if sharedPG.v != nil {
		sharedPG.v.Stop()
	}
	if sharedRD.v != nil {
		sharedRD.v.Close()
	}
}

// FreePort returns a TCP port of 127.0.0.1 that nothing listened on a
// moment ago. The servers are started again on another port when it was
// taken meanwhile.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// attempts is how many ports a start tries.
const attempts = 3

// asPostgresUser reports whether the servers that refuse to run as root
// (PostgreSQL, PgBouncer) must run as the postgres user, and if so gives
// dir to that user.
func asPostgresUser(dir string) (bool, error) {
	if os.Geteuid() != 0 {
		return false, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return false, fmt.Errorf("as root, the server must run as the postgres user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return false, err
	}
	return true, nil
}
