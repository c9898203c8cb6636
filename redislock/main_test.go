//go:build unix

package redislock

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/ad5dec64/instancelock/internal/proctest"
	"github.com/ad5dec64/instancelock/internal/testserver"
	"github.com/redis/go-redis/v9"
)

// The tests run against a throwaway redis-server that TestMain starts
// (internal/testserver) on a free port of 127.0.0.1, without persistence
// and with --maxmemory-policy noeviction, as a child process that tests can
// stop, restart and pause. When redis-server is not installed the tests
// skip with the reason, unless CI=true, where TestMain fails.
//
// Tests that need real processes re-run this test binary with
// REDISLOCK_HELPER=name (internal/proctest); TestMain then runs
// helpers[name] instead of the tests. A helper reads its arguments from the environment and reports on
// stdout, one line per step.
var helpers = map[string]func(){}

const helperEnv = "REDISLOCK_HELPER"

// srv is the test server (internal/testserver); nil when absent (then
// noServer says why).
var (
	srv      *testserver.Redis
	noServer string
)

func TestMain(m *testing.M) {
	proctest.RunHelper(helperEnv, helpers)
	redis.SetLogger(quiet{}) // the tests make the client fail to dial on purpose
	os.Exit(run(m))
}

// quiet discards the client's log lines.
type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

func run(m *testing.M) int {
	defer testserver.StopShared()
	s, err := testserver.SharedRedis()
	switch {
	case testserver.Skippable(err):
		noServer = err.Error()
		fmt.Println("SKIP: the Redis tests need a server:", noServer)
	case err != nil:
		fmt.Fprintln(os.Stderr, "FAIL: cannot start redis-server:", err)
		return 1
	default:
		srv = s
		fmt.Printf("redis-server %s on %s\n", srv.Version(), srv.Addr())
	}
	return m.Run()
}

// needServer skips the test when there is no server (never in CI, where
// TestMain fails instead), and makes sure the server runs and is not
// paused, for a test that follows one that stopped it.
func needServer(t testing.TB) {
	t.Helper()
	if srv == nil {
		t.Skip(noServer)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	srv.Resume()
}

// restartServer kills the server and starts it again on the same port,
// empty.
func restartServer(t testing.TB) {
	t.Helper()
	srv.Stop()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
}

// rawClient returns a plain client of the test server, closed at the end
// of the test.
func rawClient(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { c.Close() })
	return c
}

// helperCmd returns a command that runs helpers[name] in a child process
// against the test server, with env added to the environment.
func helperCmd(t testing.TB, name string, env ...string) *exec.Cmd {
	t.Helper()
	return proctest.Command(helperEnv, name, append([]string{"REDISLOCK_URL=" + srv.URL()}, env...)...)
}

// checkNoLeak fails the test if a goroutine of a Locker (the renewer, or a
// renewal in flight) still runs after the test's cleanups, after a grace
// period. Call it first in the test.
func checkNoLeak(t *testing.T) {
	t.Helper()
	proctest.CheckGoroutines(t, nil, func(stack string) bool { return strings.Contains(stack, "redislock.(*Locker)") })
}
