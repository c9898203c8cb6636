package instancelock

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"runtime"
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
	runTestService() // Windows: when the service control manager starts this binary
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

// clockTick waits until time.Now has moved on, so that a result cached
// for 1 ns has expired: Windows' clock advances in steps (0.5 to 15.6 ms),
// and two readings within one step are equal.
func clockTick() {
	for t0 := time.Now(); !time.Now().After(t0); {
		runtime.Gosched()
	}
}

// losableFS is where a test puts a PID file that it then removes or
// replaces, to make the lock lost: the real file system, except on
// Windows, where a held file can be neither removed nor replaced (so a
// lock cannot be lost that way), and a MemFS with Unix's rules stands in.
type losableFS struct{ mem FS }

// newUnixMemFS returns an instancelocktest.MemFS with Unix's rules. That
// package imports this one, so these internal tests cannot import it: the
// external tests set newUnixMemFS (SetUnixMemFS in export_test.go) before
// any test runs.
var newUnixMemFS func() FS

func newLosableFS() losableFS {
	if publishByRename {
		return losableFS{}
	}
	if newUnixMemFS == nil {
		panic("newUnixMemFS is not set: the external tests set it with SetUnixMemFS")
	}
	return losableFS{mem: newUnixMemFS()}
}

// use puts lk's PID file on this file system.
func (l losableFS) use(lk *Locker) {
	if l.mem != nil {
		lk.FS = l.mem
	}
}

// newWith is New(path) with the fields that set sets, set up at once (as
// the first method call would), so that a test may call the internals.
func newWith(path string, set ...func(*Locker)) (*Locker, error) {
	l, err := New(path)
	if err != nil {
		return nil, err
	}
	for _, f := range set {
		f(l)
	}
	if err := l.setup(); err != nil {
		return nil, err
	}
	return l, nil
}

// acquireWith is newWith followed by TryLock.
func acquireWith(path string, set ...func(*Locker)) (*Locker, error) {
	l, err := newWith(path, set...)
	if err != nil {
		return nil, err
	}
	if err := l.TryLock(); err != nil {
		return nil, err
	}
	return l, nil
}

// noWatch turns the watch of a held lock off.
func noWatch(l *Locker) { l.WatchInterval = -1 }

// watchEvery sets the watch interval to d.
func watchEvery(d time.Duration) func(*Locker) { return func(l *Locker) { l.WatchInterval = d } }

// noRepublish makes a holder report the loss of its file at once.
func noRepublish(l *Locker) { l.DisableRepublish = true }

func (l losableFS) remove(name string) error {
	if l.mem == nil {
		return os.Remove(name)
	}
	return l.mem.Remove(name)
}

// writeFile writes data to name, taking no lock, as a tool that ignores
// them does.
func (l losableFS) writeFile(name string, data []byte) error {
	if l.mem == nil {
		return os.WriteFile(name, data, 0o644)
	}
	f, err := l.mem.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	return errors.Join(err, f.Close())
}

func (l losableFS) readFile(name string) ([]byte, error) {
	if l.mem == nil {
		return os.ReadFile(name)
	}
	f, err := l.mem.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}
