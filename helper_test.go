package instancelock

import (
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

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
	before := goroutineIDs()
	t.Cleanup(func() {
		var leaked []string
		for deadline := time.Now().Add(3 * time.Second); ; {
			leaked = leaked[:0]
			for id, stack := range goroutineStacks() {
				if _, ok := before[id]; !ok && !benignGoroutine(stack) {
					leaked = append(leaked, stack)
				}
			}
			if len(leaked) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if len(leaked) > 0 {
			sort.Strings(leaked)
			t.Errorf("%d goroutine(s) leaked:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
		}
	})
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

func goroutineIDs() map[string]struct{} {
	ids := map[string]struct{}{}
	for id := range goroutineStacks() {
		ids[id] = struct{}{}
	}
	return ids
}

// goroutineStacks returns every goroutine's stack, keyed by its
// "goroutine N" header, except the caller's.
func goroutineStacks() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i == 0 {
			continue // the calling goroutine
		}
		id, _, _ := strings.Cut(g, " [")
		out[id] = g
	}
	return out
}
