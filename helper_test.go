package instancelock

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/ad5dec64/instancelock/internal/proctest"
)

// Tests that need real processes re-run this test binary as a helper
// process (internal/proctest): helperCmd starts it with
// INSTANCELOCK_HELPER=name, and TestMain runs helpers[name] instead of the
// tests. A helper reads its arguments from the environment and reports on
// stdout, one line per step, which the test reads with proctest.NewLines.
var helpers = map[string]func(){}

const helperEnv = "INSTANCELOCK_HELPER"

func TestMain(m *testing.M) {
	proctest.RunHelper(helperEnv, helpers)
	os.Exit(m.Run())
}

// helperCmd returns a command that runs helpers[name] in a child process,
// with env added to the environment.
func helperCmd(t testing.TB, name string, env ...string) *exec.Cmd {
	t.Helper()
	return proctest.Command(helperEnv, name, env...)
}

// checkNoGoroutineLeak fails the test if goroutines started during the test
// are still running when it ends (after a grace period for goroutines that
// are on their way out). Call it first in the test.
func checkNoGoroutineLeak(t *testing.T) {
	t.Helper()
	proctest.CheckGoroutines(t, proctest.Goroutines(), func(stack string) bool { return !benignGoroutine(stack) })
}

func benignGoroutine(stack string) bool {
	for _, s := range []string{"testing.(*T).Run", "testing.tRunner", "runtime.goexit0", "os/signal.signal_recv",
		"testing.runFuzzing", "created by testing.(*T).Run", "net/http.(*persistConn)", "net/http.(*Server).Serve",
		"internal/poll.runtime_pollWait"} {
		if strings.Contains(stack, s) && !strings.Contains(stack, "instancelock") {
			return true
		}
	}
	return strings.Contains(stack, "checkNoGoroutineLeak")
}
