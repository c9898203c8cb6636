package instancelock

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock/internal/proctest"
)

// sdLiveness is the generous upper bound for anything that should happen
// "soon" in these tests; it is never a speed goal.
const sdLiveness = 10 * time.Second

// sdAcquire acquires a lock on a PID file in a fresh temporary directory.
func sdAcquire(t *testing.T, set ...func(*Locker)) (*Locker, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "app.pid")
	lk, err := acquireWith(path, set...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lk.Unlock() })
	return lk, path
}

func sdFileExists(t *testing.T, path string) bool {
	t.Helper()
	_, err := os.Lstat(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

// sdWaitDone fails the test if g does not finish within sdLiveness.
func sdWaitDone(t *testing.T, g *GracefulShutdown) {
	t.Helper()
	select {
	case <-g.Done():
	case <-time.After(sdLiveness):
		t.Fatal("the shutdown did not finish")
	}
}

// sdRecorder collects what the hooks saw, in the order they ran.
type sdRecorder struct {
	mu    sync.Mutex
	calls []string
}

func (r *sdRecorder) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, s)
}

func (r *sdRecorder) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

func TestShutdownRunsHooksInReverseThenReleasesLock(t *testing.T) {
	checkNoGoroutineLeak(t)
	lk, path := sdAcquire(t)
	g := NewGracefulShutdown(lk)
	if got, want := g.State().InstanceID(), lk.InstanceID(); got != want {
		t.Errorf("State().InstanceID() = %q, want the Locker's %q", got, want)
	}
	if got := g.State().Status(); got != StatusStarting {
		t.Errorf("new helper's status = %v, want starting", got)
	}
	if err := g.State().Set(StatusRunning); err != nil {
		t.Fatal(err)
	}
	var rec sdRecorder
	for _, name := range []string{"agents", "database", "http"} {
		g.Add(name, func(ctx context.Context) error {
			if _, ok := ctx.Deadline(); !ok {
				t.Errorf("hook %s: context without a deadline", name)
			}
			rec.add(name + " " + g.State().Status().String() + " pidfile=" + strconv.FormatBool(sdFileExists(t, path)))
			return nil
		})
	}
	select {
	case <-g.Context().Done():
		t.Fatal("Context done before the shutdown")
	default:
	}

	if err := g.Shutdown(nil); err != nil {
		t.Fatalf("Shutdown = %v, want nil", err)
	}
	want := []string{"http stopping pidfile=true", "database stopping pidfile=true", "agents stopping pidfile=true"}
	if got := rec.get(); !slices.Equal(got, want) {
		t.Errorf("hooks saw %q, want %q", got, want)
	}
	if sdFileExists(t, path) {
		t.Error("the PID file is still there after the shutdown")
	}
	if _, held := lk.Info(); held {
		t.Error("the Locker still holds the lock")
	}
	if got := g.State().Status(); got != StatusStopped {
		t.Errorf("status after the shutdown = %v, want stopped", got)
	}
	if cause := context.Cause(g.Context()); !errors.Is(cause, ErrShutdownRequested) {
		t.Errorf("cause = %v, want ErrShutdownRequested", cause)
	}
	select {
	case <-g.Done():
	default:
		t.Error("Done not closed after Shutdown returned")
	}
	if err := g.Wait(); err != nil {
		t.Errorf("Wait = %v, want nil", err)
	}
	if code := g.ExitCode(); code != 0 {
		t.Errorf("ExitCode = %d, want 0", code)
	}
	// A second call returns the same result without running anything.
	if err := g.Shutdown(errors.New("again")); err != nil {
		t.Errorf("second Shutdown = %v, want nil", err)
	}
	if got := rec.get(); len(got) != 3 {
		t.Errorf("hooks ran %d times in all, want 3", len(got))
	}
	if cause := context.Cause(g.Context()); !errors.Is(cause, ErrShutdownRequested) {
		t.Errorf("cause after a second call = %v, want still ErrShutdownRequested", cause)
	}
}

func TestShutdownConcurrentCallsRunHooksOnce(t *testing.T) {
	checkNoGoroutineLeak(t)
	for range 20 {
		lk, path := sdAcquire(t)
		g := NewGracefulShutdown(lk)
		var runs atomic.Int32
		entered := make(chan struct{})
		release := make(chan struct{})
		errHook := errors.New("hook failed")
		g.Add("once", func(ctx context.Context) error {
			if runs.Add(1) == 1 {
				close(entered)
			}
			<-release
			return errHook
		})

		start := make(chan struct{})
		results := make(chan error, 2)
		for _, cause := range []string{"first", "second"} {
			go func() {
				<-start
				results <- g.Shutdown(errors.New(cause))
			}()
		}
		close(start)
		<-entered
		// Neither call may return while the hook runs.
		select {
		case err := <-results:
			t.Fatalf("a Shutdown call returned %v while the hook was still running", err)
		case <-time.After(20 * time.Millisecond):
		}
		close(release)
		var errs []error
		for range 2 {
			select {
			case err := <-results:
				errs = append(errs, err)
			case <-time.After(sdLiveness):
				t.Fatal("Shutdown did not return")
			}
		}
		if n := runs.Load(); n != 1 {
			t.Fatalf("the hook ran %d times, want 1", n)
		}
		if errs[0] != errs[1] {
			t.Errorf("the callers got different results: %v and %v", errs[0], errs[1])
		}
		if !errors.Is(errs[0], errHook) {
			t.Errorf("Shutdown = %v, want the hook's error", errs[0])
		}
		if cause := context.Cause(g.Context()).Error(); cause != "first" && cause != "second" {
			t.Errorf("cause = %q, want one of the callers'", cause)
		}
		if sdFileExists(t, path) {
			t.Error("PID file still there")
		}
	}
}

func TestShutdownKeepsGoingAfterFailures(t *testing.T) {
	checkNoGoroutineLeak(t)
	lk, path := sdAcquire(t)
	var logs proctest.SyncBuffer
	g := NewGracefulShutdown(lk)
	g.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	var rec sdRecorder
	errBad := errors.New("disk on fire")
	g.Add("first", func(context.Context) error { rec.add("first"); return nil })
	g.Add("boom", func(context.Context) error { rec.add("boom"); panic("kaboom") })
	g.Add("bad", func(context.Context) error { rec.add("bad"); return errBad })
	g.Add("last", func(context.Context) error { rec.add("last"); return nil })

	err := g.Shutdown(nil)
	if got, want := rec.get(), []string{"last", "bad", "boom", "first"}; !slices.Equal(got, want) {
		t.Errorf("hooks ran %q, want %q", got, want)
	}
	if err == nil {
		t.Fatal("Shutdown = nil, want the two failures")
	}
	for _, want := range []string{`"boom" panicked: kaboom`, `"bad": disk on fire`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if !errors.Is(err, errBad) {
		t.Errorf("errors.Is(err, errBad) = false for %v", err)
	}
	var hooks []*HookError
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var he *HookError
		if !errors.As(e, &he) {
			t.Fatalf("joined error %v is not a *HookError", e)
		}
		hooks = append(hooks, he)
	}
	if len(hooks) != 2 || hooks[0].Name != "bad" || hooks[1].Name != "boom" {
		t.Fatalf("hook errors = %v, want bad then boom", hooks)
	}
	if hooks[0].Panicked || hooks[0].Stack != nil {
		t.Errorf("the failing hook is reported as panicked")
	}
	if !hooks[1].Panicked || !strings.Contains(string(hooks[1].Stack), "shutdown_test.go") {
		t.Errorf("the panic's stack does not show where it happened:\n%s", hooks[1].Stack)
	}
	if sdFileExists(t, path) {
		t.Error("PID file still there after failing hooks")
	}
	if g.State().Status() != StatusStopped {
		t.Errorf("status = %v, want stopped", g.State().Status())
	}
	if g.ExitCode() != 1 {
		t.Errorf("ExitCode = %d, want 1", g.ExitCode())
	}
	out := logs.String()
	for _, want := range []string{"shutdown hook panicked", "hook=boom", "kaboom", "goroutine ", "shutdown hook failed",
		"hook=bad", `err="disk on fire"`, "shutdown hook done", "hook=last", "duration=", "lock released", "shutdown finished"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

func TestShutdownRecoversPanicWithErrorValueAndGoexit(t *testing.T) {
	checkNoGoroutineLeak(t)
	g := NewGracefulShutdown(nil)
	errVal := errors.New("an error value")
	g.Add("panics-error", func(context.Context) error { panic(errVal) })
	g.Add("goexit", func(context.Context) error { runtime.Goexit(); return nil })
	err := g.Shutdown(nil)
	if !errors.Is(err, errVal) {
		t.Errorf("a panic with an error value does not unwrap to it: %v", err)
	}
	if err == nil || !strings.Contains(err.Error(), `"goexit": the hook called runtime.Goexit`) {
		t.Errorf("the Goexit of a hook is not reported: %v", err)
	}
}

func TestShutdownHookTimeoutRunsTheNextHook(t *testing.T) {
	checkNoGoroutineLeak(t)
	lk, path := sdAcquire(t)
	g := NewGracefulShutdown(lk)
	g.Timeout = sdLiveness
	g.HookTimeout = 50 * time.Millisecond
	var rec sdRecorder
	g.Add("after", func(ctx context.Context) error {
		rec.add("after ctx.Err=" + sdErrString(ctx.Err()))
		return nil
	})
	g.Add("slow", func(ctx context.Context) error {
		rec.add("slow")
		<-ctx.Done()
		return ctx.Err()
	})
	start := time.Now()
	err := g.Shutdown(nil)
	if d := time.Since(start); d >= sdLiveness {
		t.Errorf("the per-hook limit was not applied: shutdown took %v", d)
	}
	if got, want := rec.get(), []string{"slow", "after ctx.Err=<nil>"}; !slices.Equal(got, want) {
		t.Errorf("hooks saw %q, want %q", got, want)
	}
	var he *HookError
	if !errors.As(err, &he) || he.Name != "slow" || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want a HookError for slow matching DeadlineExceeded", err)
	}
	if sdFileExists(t, path) {
		t.Error("PID file still there")
	}
}

func sdErrString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func TestShutdownOverallDeadlineStillCallsLaterHooks(t *testing.T) {
	checkNoGoroutineLeak(t)
	lk, path := sdAcquire(t)
	g := NewGracefulShutdown(lk)
	g.Timeout = 100 * time.Millisecond
	var rec sdRecorder
	g.Add("late", func(ctx context.Context) error {
		rec.add("late ctx.Err=" + sdErrString(ctx.Err()))
		return ctx.Err()
	})
	g.Add("eats-the-deadline", func(ctx context.Context) error {
		<-ctx.Done()
		rec.add("eats-the-deadline")
		return nil // it ran out of time but claims success: that is its business
	})
	start := time.Now()
	err := g.Shutdown(nil)
	if d := time.Since(start); d < g.Timeout {
		t.Errorf("shutdown took %v, less than the overall deadline the first hook waited for", d)
	}
	want := []string{"eats-the-deadline", "late ctx.Err=context deadline exceeded"}
	if got := rec.get(); !slices.Equal(got, want) {
		t.Errorf("hooks saw %q, want %q", got, want)
	}
	var he *HookError
	if !errors.As(err, &he) || he.Name != "late" || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want the late hook's DeadlineExceeded", err)
	}
	if sdFileExists(t, path) {
		t.Error("PID file still there")
	}
}

func TestShutdownAbandonsAHookThatIgnoresItsContext(t *testing.T) {
	checkNoGoroutineLeak(t)
	lk, path := sdAcquire(t)
	var logs proctest.SyncBuffer
	g := NewGracefulShutdown(lk)
	g.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	g.Timeout = 100 * time.Millisecond
	unblock := make(chan struct{})
	t.Cleanup(func() { close(unblock) }) // runs before the leak check
	var rec sdRecorder
	g.Add("before", func(ctx context.Context) error { rec.add("before"); return nil })
	g.Add("stuck", func(ctx context.Context) error { rec.add("stuck"); <-unblock; return nil })

	err := g.Shutdown(nil)
	if got, want := rec.get(), []string{"stuck", "before"}; !slices.Equal(got, want) {
		t.Errorf("hooks ran %q, want %q", got, want)
	}
	var he *HookError
	if !errors.As(err, &he) || he.Name != "stuck" || !errors.Is(err, context.DeadlineExceeded) ||
		!strings.Contains(err.Error(), "abandoned") {
		t.Errorf("Shutdown = %v, want the stuck hook abandoned", err)
	}
	if sdFileExists(t, path) {
		t.Error("PID file still there")
	}
	if out := logs.String(); !strings.Contains(out, "shutdown hook abandoned") || !strings.Contains(out, "hook=stuck") {
		t.Errorf("the abandonment is not logged:\n%s", out)
	}
}

func TestShutdownDrainDelay(t *testing.T) {
	checkNoGoroutineLeak(t)
	g := NewGracefulShutdown(nil)
	g.DrainDelay = 100 * time.Millisecond
	g.Timeout = 50 * time.Millisecond // the deadline starts after the drain
	var rec sdRecorder
	var began time.Time
	g.Add("hook", func(ctx context.Context) error {
		if d := time.Since(began); d < g.DrainDelay {
			t.Errorf("hook ran %v after the shutdown began, before the drain delay", d)
		}
		rec.add("hook ctx.Err=" + sdErrString(ctx.Err()))
		return nil
	})
	began = time.Now()
	go g.Shutdown(nil)
	<-g.Context().Done()
	if s := g.State().Status(); s != StatusStopping {
		t.Errorf("status while draining = %v, want stopping", s)
	}
	sdWaitDone(t, g)
	if err := g.Wait(); err != nil {
		t.Error(err)
	}
	if got, want := rec.get(), []string{"hook ctx.Err=<nil>"}; !slices.Equal(got, want) {
		t.Errorf("hooks saw %q, want %q", got, want)
	}
}

func TestShutdownStartContextDone(t *testing.T) {
	checkNoGoroutineLeak(t)
	lk, path := sdAcquire(t)
	g := NewGracefulShutdown(lk)
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	if err := g.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := g.Start(ctx); err == nil {
		t.Error("a second Start returned nil")
	}
	errStop := errors.New("parent stopped")
	cancel(errStop)
	sdWaitDone(t, g)
	if cause := context.Cause(g.Context()); cause != errStop {
		t.Errorf("cause = %v, want the Start context's cause", cause)
	}
	if sdFileExists(t, path) {
		t.Error("PID file still there")
	}
	if err := g.Start(context.Background()); err == nil {
		t.Error("Start after the shutdown returned nil")
	}
}

func TestShutdownStartAfterShutdownInstallsNothing(t *testing.T) {
	checkNoGoroutineLeak(t)
	g := NewGracefulShutdown(nil)
	if err := g.Shutdown(nil); err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); err == nil {
		t.Error("Start after Shutdown returned nil")
	}
}

func TestShutdownOnLockLost(t *testing.T) {
	checkNoGoroutineLeak(t)
	lfs := newLosableFS()
	lk, path := sdAcquire(t, lfs.use, watchEvery(10*time.Millisecond), noRepublish)
	g := NewGracefulShutdown(lk)
	var rec sdRecorder
	g.Add("hook", func(context.Context) error { rec.add("hook"); return nil })
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := lfs.remove(path); err != nil { // a temp cleaner, rm -rf data/
		t.Fatal(err)
	}
	sdWaitDone(t, g)
	if cause := context.Cause(g.Context()); !errors.Is(cause, ErrLockLost) {
		t.Errorf("cause = %v, want ErrLockLost", cause)
	}
	if got := rec.get(); !slices.Equal(got, []string{"hook"}) {
		t.Errorf("hooks ran %q", got)
	}
	if g.State().Status() != StatusStopped {
		t.Errorf("status = %v", g.State().Status())
	}
	if code := g.ExitCode(); code != 1 {
		t.Errorf("ExitCode = %d after a lost lock, want 1", code)
	}
}

// The lock need not be held at Start: a holding taken after Start, and one
// taken again after an Unlock, are watched, and the loss of either begins
// the shutdown with an ErrLockLost cause and exit status 1. Unlock alone
// begins nothing.
func TestShutdownWatchesHoldingsTakenAfterStart(t *testing.T) {
	for _, relock := range []bool{false, true} {
		t.Run(fmt.Sprintf("relock=%t", relock), func(t *testing.T) {
			checkNoGoroutineLeak(t)
			lfs := newLosableFS()
			path := filepath.Join(t.TempDir(), "app.pid")
			lk, err := newWith(path, lfs.use, watchEvery(10*time.Millisecond), noRepublish)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { lk.Unlock() })
			g := NewGracefulShutdown(lk)
			var rec sdRecorder
			g.Add("hook", func(context.Context) error { rec.add("hook"); return nil })
			if err := g.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			if relock {
				if err := lk.TryLock(); err != nil {
					t.Fatal(err)
				}
				time.Sleep(2 * lockPoll) // the watcher picks this holding up
				if err := lk.Unlock(); err != nil {
					t.Fatal(err)
				}
				time.Sleep(2 * lockPoll) // and sees it released
				if g.Context().Err() != nil {
					t.Fatalf("Unlock began the shutdown: %v", context.Cause(g.Context()))
				}
			}
			if err := lk.Lock(g.Context()); err != nil { // a standby's order: Start, then Lock
				t.Fatal(err)
			}
			if err := lfs.remove(path); err != nil { // a temp cleaner, rm -rf data/
				t.Fatal(err)
			}
			sdWaitDone(t, g)
			if cause := context.Cause(g.Context()); !errors.Is(cause, ErrLockLost) {
				t.Errorf("cause = %v, want ErrLockLost", cause)
			}
			if got := rec.get(); !slices.Equal(got, []string{"hook"}) {
				t.Errorf("hooks ran %q", got)
			}
			if code := g.ExitCode(); code != 1 {
				t.Errorf("ExitCode = %d after a lost lock, want 1", code)
			}
		})
	}
}

// A shutdown whose cause's methods panic (a typed nil error; a SignalError
// without a Signal) runs its hooks and exits 1; nothing takes the process
// down, and the log says what the cause was.
func TestShutdownCauseWhoseErrorPanics(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cause error
		text  string
		code  int
	}{
		{"typed nil", func() error { var e *nilPointerError; return e }(), "*instancelock.nilPointerError whose Error method panicked", 1},
		{"empty SignalError", &SignalError{}, "received signal <nil>", 0},
		{"nil SignalError", (*SignalError)(nil), "received signal <nil>", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoGoroutineLeak(t)
			lk, path := sdAcquire(t)
			var logs proctest.SyncBuffer
			g := NewGracefulShutdown(lk)
			g.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			var rec sdRecorder
			g.Add("db", func(context.Context) error { rec.add("db"); return nil })
			if err := g.Shutdown(tc.cause); err != nil {
				t.Fatal(err)
			}
			if got := rec.get(); !slices.Equal(got, []string{"db"}) {
				t.Errorf("hooks ran %q", got)
			}
			if code := g.ExitCode(); code != tc.code {
				t.Errorf("ExitCode = %d, want %d", code, tc.code)
			}
			if sdFileExists(t, path) {
				t.Error("PID file still there")
			}
			if !strings.Contains(logs.String(), tc.text) {
				t.Errorf("log lacks %q:\n%s", tc.text, logs.String())
			}
		})
	}
}

// Shutdown and Wait called from a hook return at once with an error
// instead of waiting for the shutdown that waits for the hook; a caller
// outside the hooks still waits for the end.
func TestShutdownCalledFromAHook(t *testing.T) {
	checkNoGoroutineLeak(t)
	g := NewGracefulShutdown(nil)
	g.Timeout = -1 // no deadline: a wait for itself would never end
	var fromHook []error
	g.Add("waits", func(context.Context) error {
		fromHook = append(fromHook, g.Shutdown(errors.New("again")), g.Wait())
		return nil
	})
	g.Add("slow", func(context.Context) error { time.Sleep(50 * time.Millisecond); return nil })
	go g.Shutdown(nil)
	if err := g.Shutdown(nil); err != nil { // outside the hooks: waits, then the result
		t.Fatal(err)
	}
	if len(fromHook) != 2 || fromHook[0] != errWaitInHook || fromHook[1] != errWaitInHook {
		t.Errorf("Shutdown and Wait from a hook returned %v, want errWaitInHook twice", fromHook)
	}
	if cause := context.Cause(g.Context()); cause != ErrShutdownRequested {
		t.Errorf("cause = %v, want the first caller's", cause)
	}
	if code := g.ExitCode(); code != 0 {
		t.Errorf("ExitCode = %d, want 0", code)
	}
}

// An empty non-nil Signals means no signal on every system: Start hands
// signal.Notify only SIGHUP (Unix, where it is always handled) and never an
// empty list, which would relay every signal (Windows). nil means the
// default signals.
func TestShutdownSignalsList(t *testing.T) {
	hup := hangupSignal()
	withHup := func(sigs ...os.Signal) []os.Signal {
		if hup != nil {
			sigs = append(sigs, hup)
		}
		return sigs
	}
	for _, tc := range []struct {
		name    string
		signals []os.Signal
		hangup  func()
		want    []os.Signal
		reload  os.Signal
	}{
		{"empty", []os.Signal{}, nil, withHup(), nil},
		{"empty, Hangup set", []os.Signal{}, func() {}, withHup(), hup},
		{"nil", nil, nil, withHup(defaultSignals()...), nil},
		{"interrupt only", []os.Signal{os.Interrupt}, func() {}, withHup(os.Interrupt), hup},
	} {
		g := &GracefulShutdown{Signals: tc.signals, Hangup: tc.hangup}
		sigs, reload := g.notifyList()
		if len(sigs) != len(tc.want) || !slices.Equal(sigs, tc.want) || reload != tc.reload {
			t.Errorf("%s: notifyList = %v, %v; want %v, %v", tc.name, sigs, reload, tc.want, tc.reload)
		}
	}
}

func TestShutdownLostLockLeavesANewFileAlone(t *testing.T) {
	checkNoGoroutineLeak(t)
	lfs := newLosableFS()
	lk, path := sdAcquire(t, lfs.use, watchEvery(10*time.Millisecond), noRepublish)
	g := NewGracefulShutdown(lk)
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Something else replaces the file; the shutdown must not delete it.
	if err := lfs.remove(path); err != nil {
		t.Fatal(err)
	}
	if err := lfs.writeFile(path, []byte("someone else\n")); err != nil {
		t.Fatal(err)
	}
	sdWaitDone(t, g)
	if data, err := lfs.readFile(path); err != nil || string(data) != "someone else\n" {
		t.Errorf("the replacing file was touched: %q, %v", data, err)
	}
}

func TestShutdownAddAfterBeginIsNotRun(t *testing.T) {
	checkNoGoroutineLeak(t)
	var logs proctest.SyncBuffer
	g := NewGracefulShutdown(nil)
	g.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	var rec sdRecorder
	g.Add("adds-another", func(context.Context) error {
		g.Add("too-late", func(context.Context) error { rec.add("too-late"); return nil })
		rec.add("adds-another")
		return nil
	})
	if err := g.Shutdown(nil); err != nil {
		t.Fatal(err)
	}
	g.Add("after-done", func(context.Context) error { rec.add("after-done"); return nil })
	if got := rec.get(); !slices.Equal(got, []string{"adds-another"}) {
		t.Errorf("hooks ran %q", got)
	}
	for _, name := range []string{"hook=too-late", "hook=after-done"} {
		if out := logs.String(); !strings.Contains(out, name) || !strings.Contains(out, "will not run") {
			t.Errorf("log lacks %s:\n%s", name, out)
		}
	}
}

func TestShutdownWithoutLocker(t *testing.T) {
	checkNoGoroutineLeak(t)
	g := NewGracefulShutdown(nil)
	if g.State().InstanceID() == "" {
		t.Error("no instance id")
	}
	if err := g.Shutdown(nil); err != nil {
		t.Fatal(err)
	}
	if g.State().Status() != StatusStopped || g.ExitCode() != 0 {
		t.Errorf("status %v, exit code %d", g.State().Status(), g.ExitCode())
	}
}

func TestShutdownAddNilPanics(t *testing.T) {
	defer func() {
		if r := recover(); r == nil {
			t.Error("Add(name, nil) did not panic")
		}
	}()
	NewGracefulShutdown(nil).Add("nil", nil)
}

func TestShutdownErrorTypes(t *testing.T) {
	se := &SignalError{Signal: os.Interrupt}
	if got := se.Error(); got != "received signal interrupt" {
		t.Errorf("SignalError.Error() = %q", got)
	}
	inner := errors.New("closing: broken pipe")
	he := &HookError{Name: "db", Err: inner}
	if got, want := he.Error(), `instancelock: shutdown hook "db": closing: broken pipe`; got != want {
		t.Errorf("HookError.Error() = %q, want %q", got, want)
	}
	if !errors.Is(he, inner) {
		t.Error("HookError does not unwrap")
	}
	hp := &HookError{Name: "agents", Err: errors.New("nil map"), Panicked: true}
	if got, want := hp.Error(), `instancelock: shutdown hook "agents" panicked: nil map`; got != want {
		t.Errorf("HookError.Error() = %q, want %q", got, want)
	}
}

// TestExitCodeRule checks the rule of ExitCode for each kind of cause: a
// shutdown that was asked for exits 0, one caused by an error exits 1 even
// when every hook succeeds, and a failing hook always exits 1.
func TestExitCodeRule(t *testing.T) {
	hookErr := errors.New("database did not close")
	for _, tc := range []struct {
		name    string
		start   func(g *GracefulShutdown) // begins the shutdown
		hookErr error
		want    int
	}{
		{"Shutdown(nil)", func(g *GracefulShutdown) { g.Shutdown(nil) }, nil, 0},
		{"Shutdown(nil), failing hook", func(g *GracefulShutdown) { g.Shutdown(nil) }, hookErr, 1},
		{"Shutdown(err)", func(g *GracefulShutdown) { g.Shutdown(errors.New("startup failed")) }, nil, 1},
		{"Shutdown(wrapped ErrShutdownRequested)", func(g *GracefulShutdown) {
			g.Shutdown(fmt.Errorf("operator asked: %w", ErrShutdownRequested))
		}, nil, 0},
		{"lost lock", func(g *GracefulShutdown) { g.Shutdown(fmt.Errorf("pid file: %w", ErrLockLost)) }, nil, 1},
		{"signal", func(g *GracefulShutdown) { g.Shutdown(&SignalError{Signal: os.Interrupt}) }, nil, 0},
		{"Start's context cancelled", func(g *GracefulShutdown) {
			ctx, cancel := context.WithCancel(context.Background())
			if err := g.Start(ctx); err != nil {
				t.Fatal(err)
			}
			cancel()
			<-g.Done()
		}, nil, 0},
		{"Start's context cancelled with a cause", func(g *GracefulShutdown) {
			ctx, cancel := context.WithCancelCause(context.Background())
			if err := g.Start(ctx); err != nil {
				t.Fatal(err)
			}
			cancel(errors.New("config reload failed"))
			<-g.Done()
		}, nil, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoGoroutineLeak(t)
			g := NewGracefulShutdown(nil)
			g.Add("db", func(context.Context) error { return tc.hookErr })
			tc.start(g)
			if got := g.ExitCode(); got != tc.want {
				t.Errorf("ExitCode = %d, want %d (cause %v, Wait %v)", got, tc.want, context.Cause(g.Context()), g.Wait())
			}
		})
	}
}
