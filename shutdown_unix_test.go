//go:build unix

package instancelock

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock/internal/proctest"
)

// sdPrepareChild: a child needs nothing special on Unix.
func sdPrepareChild(*exec.Cmd) {}

func (c *sdChild) signal(sig os.Signal) {
	c.t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		c.t.Fatal(err)
	}
}

func TestShutdownChildOnSignal(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			c := sdStartChild(t, "SHUTDOWN_HOOKS=agents:ok,database:ok,http:ok")
			c.signal(sig)
			lines, code := c.finish()
			want := []string{
				"hook http state=stopping pidfile=true",
				"hook database state=stopping pidfile=true",
				"hook agents state=stopping pidfile=true",
				"done state=stopped cause=received signal " + sig.String() + " pidfile=false err=<nil>",
			}
			if !slices.Equal(lines, want) {
				t.Errorf("child said\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
			}
			if code != 0 {
				t.Errorf("exit code %d, want 0", code)
			}
			c.pidFileGone()
		})
	}
}

// A child whose stderr is a pipe with no reader left (a log shipper that
// exited) still runs its hooks on SIGTERM, removes its PID file and exits
// 0: the shutdown's first log line would otherwise kill it with SIGPIPE.
func TestShutdownChildStderrReaderGone(t *testing.T) {
	t.Parallel()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	c := sdStartChildStderr(t, w, "SHUTDOWN_HOOKS=database:ok,http:ok")
	w.Close()
	r.Close() // now the child's writes to stderr fail with EPIPE
	c.signal(syscall.SIGTERM)
	lines, code := c.finish()
	want := []string{
		"hook http state=stopping pidfile=true",
		"hook database state=stopping pidfile=true",
		"done state=stopped cause=received signal terminated pidfile=false err=<nil>",
	}
	if !slices.Equal(lines, want) {
		t.Errorf("child said\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if code != 0 {
		t.Errorf("exit code %d (%v), want 0", code, c.cmd.ProcessState)
	}
	c.pidFileGone()
}

// SIGHUP never kills with its default action: without Hangup it begins the
// shutdown like SIGTERM; with Hangup it calls it, every time, and the
// instance keeps running until SIGTERM.
func TestShutdownChildSIGHUP(t *testing.T) {
	t.Parallel()
	t.Run("shutdown", func(t *testing.T) {
		t.Parallel()
		c := sdStartChild(t, "SHUTDOWN_HOOKS=database:ok,http:ok")
		c.signal(syscall.SIGHUP)
		lines, code := c.finish()
		want := []string{
			"hook http state=stopping pidfile=true",
			"hook database state=stopping pidfile=true",
			"done state=stopped cause=received signal hangup pidfile=false err=<nil>",
		}
		if !slices.Equal(lines, want) {
			t.Errorf("child said\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
		}
		if code != 0 {
			t.Errorf("exit code %d (%v), want 0", code, c.cmd.ProcessState)
		}
		c.pidFileGone()
	})
	t.Run("Hangup hook", func(t *testing.T) {
		t.Parallel()
		c := sdStartChild(t, "SHUTDOWN_HOOKS=http:ok", "SHUTDOWN_HANGUP=1")
		for range 3 {
			c.signal(syscall.SIGHUP)
			if l := c.lr.Next(sdLiveness); l != "hangup state=running" {
				t.Fatalf("after SIGHUP the child said %q, want hangup state=running", l)
			}
		}
		if !sdFileExists(t, c.path) {
			t.Fatal("the PID file is gone after SIGHUP")
		}
		c.signal(syscall.SIGTERM)
		lines, code := c.finish()
		want := []string{
			"hook http state=stopping pidfile=true",
			"done state=stopped cause=received signal terminated pidfile=false err=<nil>",
		}
		if !slices.Equal(lines, want) {
			t.Errorf("child said\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
		}
		if code != 0 {
			t.Errorf("exit code %d (%v), want 0", code, c.cmd.ProcessState)
		}
		if log := c.errb.String(); !strings.Contains(log, "running the Hangup hook") {
			t.Errorf("the Hangup call is not logged:\n%s", log)
		}
	})
}

// A hook that never returns is abandoned at its limit (the overall
// deadline, or HookTimeout when sooner) and the next hooks run. Which limit
// applied is read from the child's own account of the abandoned hook ("still
// running D after it was called"), measured by the library in the child;
// the test's clock only checks that the child did not exit before the limit,
// since on a busy machine a process may take any time to exit.
func TestShutdownChildHungHook(t *testing.T) {
	t.Parallel()
	const timeout = 500 * time.Millisecond
	for _, tc := range []struct {
		name        string
		hookTimeout time.Duration
		limit       time.Duration // when the hung hook is abandoned
	}{
		{"overall deadline", 0, timeout},
		{"per-hook limit", 100 * time.Millisecond, 100 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := sdStartChild(t, "SHUTDOWN_HOOKS=first:ok,hang:hang,last:ok",
				"SHUTDOWN_TIMEOUT="+timeout.String(), "SHUTDOWN_HOOK_TIMEOUT="+tc.hookTimeout.String())
			start := time.Now()
			c.signal(syscall.SIGTERM)
			lines, code := c.finish()
			if took := time.Since(start); took < tc.limit {
				t.Errorf("the child exited %v after SIGTERM, before the hook's limit %v", took, tc.limit)
			}
			if len(lines) == 4 {
				m := regexp.MustCompile(`still running (\S+) after it was called`).FindStringSubmatch(lines[3])
				if m == nil {
					t.Fatalf("done line %q does not say how long the hung hook ran", lines[3])
				}
				ran, err := time.ParseDuration(m[1])
				if err != nil {
					t.Fatal(err)
				}
				// Abandoned at this limit, not at the other one: the two are
				// 400 ms apart.
				if ran < tc.limit || (tc.limit < timeout && ran >= timeout) {
					t.Errorf("the hung hook was abandoned after %v, want at %v (HookTimeout %v, Timeout %v)", ran, tc.limit, tc.hookTimeout, timeout)
				}
			}
			if len(lines) != 4 || lines[0] != "hook last state=stopping pidfile=true" ||
				lines[1] != "hook hang state=stopping pidfile=true" || lines[2] != "hook first state=stopping pidfile=true" {
				t.Fatalf("child said %q, want the three hooks in reverse order", lines)
			}
			for _, want := range []string{"state=stopped", "pidfile=false", `"hang": abandoned`, "deadline exceeded"} {
				if !strings.Contains(lines[3], want) {
					t.Errorf("done line %q lacks %q", lines[3], want)
				}
			}
			if code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			c.pidFileGone()
		})
	}
}

func TestShutdownChildFailingHooks(t *testing.T) {
	t.Parallel()
	c := sdStartChild(t, "SHUTDOWN_HOOKS=first:ok,boom:panic,bad:err,last:ok")
	c.signal(syscall.SIGTERM)
	lines, code := c.finish()
	var hooks []string
	for _, l := range lines[:len(lines)-1] {
		name, _, _ := strings.Cut(strings.TrimPrefix(l, "hook "), " ")
		hooks = append(hooks, name)
	}
	if want := []string{"last", "bad", "boom", "first"}; !slices.Equal(hooks, want) {
		t.Errorf("hooks ran %q, want %q", hooks, want)
	}
	done := lines[len(lines)-1]
	for _, want := range []string{`"bad": failed on purpose`, `"boom" panicked: panicked on purpose`, "pidfile=false", "state=stopped"} {
		if !strings.Contains(done, want) {
			t.Errorf("done line %q lacks %q", done, want)
		}
	}
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if log := c.errb.String(); !strings.Contains(log, "shutdown hook panicked") || !strings.Contains(log, "shutdown_child_test.go") {
		t.Errorf("the panic is not logged with its stack:\n%s", log)
	}
	c.pidFileGone()
}

// A standby installs its signal handling first and then waits for the lock
// (Start, then Lock(g.Context())): the loss of that holding, taken after
// Start, begins the shutdown, and the child exits 1.
func TestShutdownChildLockTakenAfterStartIsWatched(t *testing.T) {
	t.Parallel()
	c := sdStartChild(t, "SHUTDOWN_HOOKS=db:ok", "SHUTDOWN_LOCK_AFTER_START=1", "SHUTDOWN_NO_REPUBLISH=1")
	if err := os.Remove(c.path); err != nil { // a temp cleaner, rm -rf data/
		t.Fatal(err)
	}
	lines, code := c.finish()
	if len(lines) != 2 || lines[0] != "hook db state=stopping pidfile=false" {
		t.Fatalf("child said %q, want hook db then done", lines)
	}
	for _, want := range []string{"state=stopped", "cause=instancelock: shutting down:", "lock lost"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("done line %q lacks %q", lines[1], want)
		}
	}
	if code != 1 {
		t.Errorf("exit code %d after the loss of the lock, want 1", code)
	}
}

// A hook that calls Shutdown, with no overall deadline (Timeout < 0): the
// call returns at once with an error saying why instead of waiting for the
// shutdown that waits for the hook; the shutdown finishes on SIGTERM alone.
func TestShutdownChildShutdownFromHook(t *testing.T) {
	t.Parallel()
	c := sdStartChild(t, "SHUTDOWN_HOOKS=again:reentrant,http:ok", "SHUTDOWN_TIMEOUT=-1s")
	c.signal(syscall.SIGTERM)
	lines, code := c.finish()
	want := []string{
		"hook http state=stopping pidfile=true",
		"hook again state=stopping pidfile=true",
		"reentrant returned: " + errWaitInHook.Error(),
		"done state=stopped cause=received signal terminated pidfile=false err=<nil>",
	}
	if !slices.Equal(lines, want) {
		t.Errorf("child said\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	c.pidFileGone()
}

// An empty Signals list handles no signal: SIGTERM kills the child as if
// there were no helper (no hook, no "done" line), while SIGHUP, handled on
// Unix whatever Signals holds, still begins the shutdown.
func TestShutdownChildEmptySignals(t *testing.T) {
	t.Parallel()
	c := sdStartChild(t, "SHUTDOWN_HOOKS=db:ok", "SHUTDOWN_SIGNALS=none")
	c.signal(syscall.SIGTERM)
	lines, _ := c.finish()
	if ws := c.cmd.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGTERM || len(lines) != 0 {
		t.Errorf("with Signals empty, SIGTERM: child said %q, ended %v; want nothing, killed by SIGTERM", lines, c.cmd.ProcessState)
	}
	c = sdStartChild(t, "SHUTDOWN_HOOKS=db:ok", "SHUTDOWN_SIGNALS=none")
	c.signal(syscall.SIGHUP)
	lines, code := c.finish()
	if len(lines) != 2 || !strings.HasPrefix(lines[1], "done state=stopped cause=received signal hangup") || code != 0 {
		t.Errorf("with Signals empty, SIGHUP: child said %q, exit %d; want the shutdown, 0", lines, code)
	}
}

func TestShutdownChildSecondSignalForcesExit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		first, second syscall.Signal
		code          int
	}{
		{syscall.SIGINT, syscall.SIGINT, 130},
		{syscall.SIGTERM, syscall.SIGTERM, 143},
		{syscall.SIGTERM, syscall.SIGINT, 130},
	} {
		t.Run(tc.first.String()+" then "+tc.second.String(), func(t *testing.T) {
			t.Parallel()
			c := sdStartChild(t, "SHUTDOWN_HOOKS=after:ok,slow:slow", "SHUTDOWN_TIMEOUT=1m")
			c.signal(tc.first)
			if l := c.lr.Next(sdLiveness); l != "hook slow state=stopping pidfile=true" {
				t.Fatalf("child said %q", l)
			}
			start := time.Now()
			c.signal(tc.second)
			lines, code := c.finish()
			// "At once" against a one-minute deadline; the bound is sdLiveness only.
			if took := time.Since(start); took > sdLiveness/2 {
				t.Errorf("the child took %v to exit after the second signal", took)
			}
			if len(lines) != 0 {
				t.Errorf("the child went on after the second signal: %q", lines)
			}
			if code != tc.code {
				t.Errorf("exit code %d, want %d", code, tc.code)
			}
			if log := c.errb.String(); !strings.Contains(log, "second signal during shutdown") {
				t.Errorf("the forced exit is not logged:\n%s", log)
			}
			c.pidFileGone()
		})
	}
}

// A signal kills a process that created a GracefulShutdown but did not
// start it, and one whose shutdown has finished: no handler is installed
// before Start or left after the shutdown.
func TestShutdownChildNoHandlerOutsideStartToDone(t *testing.T) {
	t.Parallel()
	for _, cycle := range []string{"0", "1"} {
		t.Run("cycle="+cycle, func(t *testing.T) {
			t.Parallel()
			cmd := helperCmd(t, "shutdown-idle", "SHUTDOWN_CYCLE="+cycle)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			if l, err := bufio.NewReader(out).ReadString('\n'); l != "idle\n" {
				t.Fatalf("child said %q, %v", l, err)
			}
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			cmd.Wait()
			ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
			if !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
				t.Errorf("the child was not killed by SIGTERM: %v", cmd.ProcessState)
			}
		})
	}
}

// The signal path in this process, with the exit replaced: the first
// signal starts the shutdown and is the cause, the second "exits" with
// 128+signal after releasing the lock, and every goroutine ends.
func TestShutdownSignalsInProcess(t *testing.T) {
	checkNoGoroutineLeak(t)
	codes := make(chan int, 1)
	osExit = func(code int) { codes <- code }
	defer func() { osExit = os.Exit }()

	lk, path := sdAcquire(t)
	g := NewGracefulShutdown(lk)
	g.Signals = []os.Signal{syscall.SIGUSR1}
	g.Timeout = sdLiveness
	entered, release := make(chan struct{}), make(chan struct{})
	g.Add("slow", func(ctx context.Context) error {
		close(entered)
		select {
		case <-ctx.Done():
		case <-release:
		}
		return nil
	})
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(sdLiveness):
		t.Fatal("the signal did not start the shutdown")
	}
	var se *SignalError
	if cause := context.Cause(g.Context()); !errors.As(cause, &se) || se.Signal != syscall.SIGUSR1 {
		t.Errorf("cause = %v, want a *SignalError for SIGUSR1", cause)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-codes:
		if want := 128 + int(syscall.SIGUSR1); code != want {
			t.Errorf("forced exit code %d, want %d", code, want)
		}
	case <-time.After(sdLiveness):
		t.Fatal("the second signal did not force the exit")
	}
	if sdFileExists(t, path) {
		t.Error("the PID file is still there at the forced exit")
	}
	// The fake exit returned, so the shutdown goes on: let the hook end.
	close(release)
	sdWaitDone(t, g)
}

// SIGHUP with Hangup set, in this process: each SIGHUP calls Hangup (a
// panic in it is recovered and logged), a SIGHUP during the shutdown is
// ignored, and nothing forces the exit.
func TestShutdownHangupInProcess(t *testing.T) {
	checkNoGoroutineLeak(t)
	codes := make(chan int, 1)
	osExit = func(code int) { codes <- code }
	defer func() { osExit = os.Exit }()

	var log proctest.SyncBuffer
	g := NewGracefulShutdown(nil)
	g.Signals = []os.Signal{syscall.SIGUSR1}
	g.Timeout = sdLiveness
	g.Logger = slog.New(slog.NewTextHandler(&log, nil))
	calls := make(chan int, 4)
	n := 0
	g.Hangup = func() {
		n++
		calls <- n
		if n == 1 {
			panic("reload failed")
		}
	}
	entered, release := make(chan struct{}), make(chan struct{})
	g.Add("slow", func(ctx context.Context) error {
		close(entered)
		<-release
		return nil
	})
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for want := 1; want <= 2; want++ {
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-calls:
			if got != want {
				t.Fatalf("Hangup call %d, want %d", got, want)
			}
		case <-time.After(sdLiveness):
			t.Fatalf("SIGHUP %d did not call Hangup", want)
		}
	}
	if g.Context().Err() != nil {
		t.Fatalf("SIGHUP with Hangup set began the shutdown: %v", context.Cause(g.Context()))
	}
	go g.Shutdown(nil)
	<-entered
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventuallyTrue(t, "the SIGHUP during the shutdown is logged", func() bool {
		return strings.Contains(log.String(), "SIGHUP during the shutdown: ignored")
	})
	close(release)
	sdWaitDone(t, g)
	select {
	case c := <-calls:
		t.Errorf("Hangup was called during the shutdown (call %d)", c)
	case c := <-codes:
		t.Errorf("SIGHUP forced the exit with %d", c)
	default:
	}
	if !strings.Contains(log.String(), "the Hangup hook panicked") || !strings.Contains(log.String(), "reload failed") {
		t.Errorf("the panic in Hangup is not logged:\n%s", log.String())
	}
}

func eventuallyTrue(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(sdLiveness); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", sdLiveness, what)
		}
	}
}

func TestSignalExitCode(t *testing.T) {
	for sig, want := range map[os.Signal]int{syscall.SIGINT: 130, syscall.SIGTERM: 143, syscall.SIGHUP: 129, os.Interrupt: 130} {
		if got := signalExitCode(sig); got != want {
			t.Errorf("signalExitCode(%v) = %d, want %d", sig, got, want)
		}
	}
	if got := signalExitCode(sdFakeSignal{}); got != 1 {
		t.Errorf("signalExitCode of a non-syscall signal = %d, want 1", got)
	}
}

type sdFakeSignal struct{}

func (sdFakeSignal) Signal()        {}
func (sdFakeSignal) String() string { return "fake" }

// BenchmarkShutdownSignalToExit measures, over b.N runs of a helper process
// with no hooks, the time from sending SIGTERM to the process's exit as
// its parent sees it (wait4 returns). It reports the median and the 95th
// percentile in milliseconds.
//
//	go test -run '^$' -bench ShutdownSignalToExit -benchtime 200x
func BenchmarkShutdownSignalToExit(b *testing.B) {
	ds := make([]time.Duration, 0, b.N)
	for range b.N {
		b.StopTimer()
		cmd, ready := sdStartBenchChild(b)
		<-ready
		b.StartTimer()
		start := time.Now()
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			b.Fatal(err)
		}
		err := cmd.Wait()
		ds = append(ds, time.Since(start))
		if err != nil {
			b.Fatalf("child: %v", err)
		}
	}
	sdReportPercentiles(b, ds, 0, "")
}

// BenchmarkShutdownHungHookOvershoot measures how far past a 100 ms overall
// deadline a process whose only hook never returns exits after SIGTERM. It
// reports the median and 95th percentile of the overshoot in milliseconds.
//
//	go test -run '^$' -bench ShutdownHungHookOvershoot -benchtime 50x
func BenchmarkShutdownHungHookOvershoot(b *testing.B) {
	const timeout = 100 * time.Millisecond
	ds := make([]time.Duration, 0, b.N)
	for range b.N {
		b.StopTimer()
		cmd, ready := sdStartBenchChild(b, "SHUTDOWN_HOOKS=hang:hang", "SHUTDOWN_TIMEOUT="+timeout.String())
		<-ready
		b.StartTimer()
		start := time.Now()
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			b.Fatal(err)
		}
		cmd.Wait()
		ds = append(ds, time.Since(start))
		if code := cmd.ProcessState.ExitCode(); code != 1 {
			b.Fatalf("exit code %d, want 1", code)
		}
	}
	sdReportPercentiles(b, ds, timeout, "overshoot-")
}

// sdStartBenchChild starts shutdownChild quietly; ready is closed once it has
// said "ready".
func sdStartBenchChild(b *testing.B, env ...string) (*exec.Cmd, <-chan struct{}) {
	b.Helper()
	path := filepath.Join(b.TempDir(), "app.pid")
	cmd := helperCmd(b, "shutdown-child", append([]string{"SHUTDOWN_PIDFILE=" + path}, env...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		l, _ := bufio.NewReader(out).ReadString('\n')
		if l == "ready\n" {
			close(ready)
		}
	}()
	select {
	case <-ready:
	case <-time.After(sdLiveness):
		cmd.Process.Kill()
		b.Fatal("the child did not get ready")
	}
	return cmd, ready
}

func sdReportPercentiles(b *testing.B, ds []time.Duration, minus time.Duration, prefix string) {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	at := func(p float64) float64 {
		return float64(ds[int(p*float64(len(ds)-1))]-minus) / float64(time.Millisecond)
	}
	b.ReportMetric(at(0.50), prefix+"p50-ms")
	b.ReportMetric(at(0.95), prefix+"p95-ms")
	b.ReportMetric(float64(ds[len(ds)-1]-minus)/float64(time.Millisecond), prefix+"max-ms")
}
