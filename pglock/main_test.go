package pglock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock/internal/proctest"
	"github.com/ad5dec64/instancelock/internal/testserver"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// The tests run against a throwaway PostgreSQL 15 that TestMain starts on
// a free port of 127.0.0.1 (internal/testserver), in a temporary
// directory, and stops at the end. Without PostgreSQL the tests skip with
// the reason, unless CI=true, where they fail. PGLOCK_PG_BIN names the
// directory of initdb and pg_ctl when they are neither in
// /usr/lib/postgresql/*/bin nor on PATH.
var (
	testSrv    *testserver.Postgres
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
	defer testserver.StopShared() // the server, and PgBouncer if a test started it
	srv, err := testserver.SharedPostgres()
	switch {
	case testserver.Skippable(err):
		skipReason = err.Error()
		fmt.Println("pglock: tests that need PostgreSQL skip:", skipReason)
	case err != nil:
		fmt.Fprintf(os.Stderr, "pglock: starting PostgreSQL: %v\n", err)
		return 1
	default:
		testSrv, testDSN, testAddr = srv, srv.URL, srv.Addr
	}
	return m.Run()
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
func newLocker(t testing.TB, name string) *Locker {
	t.Helper()
	needPG(t)
	l, err := New(testDSN, name)
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
