package instancelock

// The configuration rule (see the package doc) for GracefulShutdown,
// Health and Check: the zero value of each type works, 0 in a duration
// field is its documented default and a negative value its documented
// "off" or "no limit".

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock/internal/proctest"
)

func init() { helpers["shutdown-config"] = shutdownConfigChild }

// shutdownConfigChild runs a zero GracefulShutdown (no lock) with the
// durations of SHUTDOWN_TIMEOUT, SHUTDOWN_HOOK_TIMEOUT and SHUTDOWN_DRAIN
// (unset: the zero value) and two hooks that print how far their deadline
// is, in whole seconds rounded up, or "none". It prints "ready" once
// started, logs to stderr, and begins the shutdown on SIGTERM (Unix) or
// when its standard input closes (Windows), then prints a done line and
// exits with ExitCode.
func shutdownConfigChild() {
	g := &GracefulShutdown{
		Timeout:     sdEnvDuration("SHUTDOWN_TIMEOUT"),
		HookTimeout: sdEnvDuration("SHUTDOWN_HOOK_TIMEOUT"),
		DrainDelay:  sdEnvDuration("SHUTDOWN_DRAIN"),
		Logger:      slog.New(slog.NewTextHandler(os.Stderr, nil)),
	}
	for _, name := range []string{"first", "second"} {
		g.Add(name, func(ctx context.Context) error {
			fmt.Printf("hook %s deadline=%s\n", name, deadlineSeconds(ctx))
			return nil
		})
	}
	if err := g.Start(context.Background()); err != nil {
		fmt.Println("start:", err)
		os.Exit(3)
	}
	if err := g.State().Set(StatusRunning); err != nil {
		fmt.Println("state:", err)
		os.Exit(3)
	}
	if runtime.GOOS == "windows" {
		go func() {
			io.Copy(io.Discard, os.Stdin)
			g.Shutdown(nil)
		}()
	}
	fmt.Println("ready")
	err := g.Wait()
	fmt.Printf("done state=%s cause=%v err=%v\n", g.State().Status(), context.Cause(g.Context()), err)
	os.Exit(g.ExitCode())
}

// deadlineSeconds says how far ctx's deadline is, in whole seconds rounded
// up, or "none".
func deadlineSeconds(ctx context.Context) string {
	dl, ok := ctx.Deadline()
	if !ok {
		return "none"
	}
	return fmt.Sprintf("%ds", (time.Until(dl)+time.Second-1)/time.Second)
}

// The zero GracefulShutdown in a real process, stopped by a real SIGTERM
// (on Windows by its host calling Shutdown), and what each duration's 0
// and negative values mean: Timeout 0 is 5 s and negative is no deadline,
// HookTimeout 0 or negative is no limit of the hook's own, DrainDelay 0 or
// negative is no drain.
func TestShutdownConfigChild(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                 string
		timeout, hook, drain string
		wantDeadline         string
		wantDrain            bool
	}{
		{name: "zero value", wantDeadline: "5s"},
		{name: "negative timeout: no deadline", timeout: "-1s", wantDeadline: "none"},
		{name: "negative timeout and hook timeout", timeout: "-1s", hook: "-1s", wantDeadline: "none"},
		{name: "negative timeout, hook timeout 3s", timeout: "-1s", hook: "3s", wantDeadline: "3s"},
		{name: "timeout 2s, hook timeout 0", timeout: "2s", wantDeadline: "2s"},
		{name: "timeout 2s, negative hook timeout", timeout: "2s", hook: "-1s", wantDeadline: "2s"},
		{name: "hook timeout sooner than the default", hook: "3s", wantDeadline: "3s"},
		{name: "negative drain: none", drain: "-1s", wantDeadline: "5s"},
		{name: "drain", drain: "10ms", wantDeadline: "5s", wantDrain: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cmd := helperCmd(t, "shutdown-config", "SHUTDOWN_TIMEOUT="+tc.timeout,
				"SHUTDOWN_HOOK_TIMEOUT="+tc.hook, "SHUTDOWN_DRAIN="+tc.drain)
			sdPrepareChild(cmd)
			stderr := &proctest.SyncBuffer{}
			cmd.Stderr = stderr
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			lines := proctest.NewLines(t, cmd)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				cmd.Process.Kill()
				cmd.Wait()
				if t.Failed() {
					t.Logf("child's log:\n%s", stderr.String())
				}
			})
			c := &sdChild{t: t, cmd: cmd, lr: lines, errb: stderr}
			if l := lines.Next(sdLiveness); l != "ready" {
				t.Fatalf("child said %q, want ready", l)
			}
			cause := "received signal terminated"
			if runtime.GOOS == "windows" {
				stdin.Close()
				cause = ErrShutdownRequested.Error()
			} else if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			got, code := c.finish()
			want := []string{
				"hook second deadline=" + tc.wantDeadline,
				"hook first deadline=" + tc.wantDeadline,
				"done state=stopped cause=" + cause + " err=<nil>",
			}
			if !slices.Equal(got, want) {
				t.Errorf("child said\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			if code != 0 {
				t.Errorf("exit code %d, want 0", code)
			}
			if drained := strings.Contains(stderr.String(), "msg=draining"); drained != tc.wantDrain {
				t.Errorf("drained = %t, want %t; log:\n%s", drained, tc.wantDrain, stderr)
			}
		})
	}
}

// The zero GracefulShutdown in this process: every method works before
// Start, the first calls may come from several goroutines at once, and the
// shutdown runs the hooks without a lock to release.
func TestShutdownZeroValue(t *testing.T) {
	checkNoGoroutineLeak(t)
	g := &GracefulShutdown{}
	select {
	case <-g.Done():
		t.Fatal("Done is closed before the shutdown")
	case <-g.Context().Done():
		t.Fatal("Context is done before the shutdown")
	default:
	}
	if st := g.State(); st.Status() != StatusStarting || st.InstanceID() == "" {
		t.Errorf("State() = %v with id %q, want starting with a random id", st.Status(), st.InstanceID())
	}
	if r := g.HookResults(); len(r) != 0 {
		t.Errorf("HookResults before the shutdown = %v", r)
	}
	var ran atomic.Int32
	g.Add("hook", func(ctx context.Context) error {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("a hook of the zero value has no deadline; want the default 5 s")
		}
		ran.Add(1)
		return nil
	})
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := g.State().Set(StatusRunning); err != nil {
		t.Fatal(err)
	}
	if err := g.Shutdown(nil); err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	if ran.Load() != 1 || g.ExitCode() != 0 || g.State().Status() != StatusStopped {
		t.Errorf("hook ran %d times, exit code %d, state %v; want 1, 0, stopped", ran.Load(), g.ExitCode(), g.State().Status())
	}

	// The first calls of a fresh zero value, concurrently: one State, one
	// context, one done channel for all.
	g = &GracefulShutdown{}
	var wg sync.WaitGroup
	states := make([]*State, 8)
	for i := range states {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == 0 {
				go g.Shutdown(nil)
			}
			states[i] = g.State()
			g.Wait()
		}()
	}
	wg.Wait()
	for _, st := range states {
		if st != states[0] {
			t.Fatal("concurrent first calls saw different States")
		}
	}
	if err := g.Wait(); err != nil || g.State().Status() != StatusStopped {
		t.Errorf("Wait = %v, state %v; want nil, stopped", err, g.State().Status())
	}
}

// The zero Health answers over HTTP as NewHealth(nil, nil): the process's
// health, running, no lock, no instance id; checks and counters can be
// added to it, and its first requests may come concurrently.
func TestHealthZeroValue(t *testing.T) {
	checkNoGoroutineLeak(t)
	h := &Health{}
	srv := healthServer(t, h)
	var wg sync.WaitGroup
	answers := make([]healthResponse, 8)
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i] = healthDo(t, http.MethodGet, srv.URL+[]string{"/api/health", "/livez"}[i%2], "")
		}()
	}
	wg.Wait()
	for _, r := range answers {
		if r.code != http.StatusOK || r.body["status"] != "ok" {
			t.Fatalf("zero Health: %d %s, want 200 ok", r.code, r.raw)
		}
		if pid := wantNumber(t, r.body, "pid"); pid != int64(os.Getpid()) {
			t.Errorf("pid %d, want %d", pid, os.Getpid())
		}
		wantString(t, r.body, "startedAt")
		if _, ok := r.body["instanceId"]; ok {
			t.Errorf("instanceId without a State or lock: %s", r.raw)
		}
	}
	if rs := h.CheckResults(); len(rs) != 0 {
		t.Errorf("CheckResults = %v, want none", rs)
	}

	h = &Health{}
	h.AddCounter("activeAgents", func() int { return 3 })
	h.AddCheck(Check{Name: "databaseStatus", Run: func(context.Context) error { return errors.New("down") }})
	srv = healthServer(t, h)
	r := healthGet(t, srv.URL+"/api/health")
	if r.code != http.StatusServiceUnavailable || r.body["databaseStatus"] != "error" || wantNumber(t, r.body, "activeAgents") != 3 {
		t.Errorf("zero Health with a failing check and a counter: %d %s", r.code, r.raw)
	}
	if rs := h.CheckResults(); len(rs) != 1 || !rs[0].Ran || rs[0].Err == nil {
		t.Errorf("CheckResults = %+v, want the failed run", rs)
	}
}

// CacheTTL 0 reuses a result for 1 s; negative reuses none: every probe
// runs the checks.
func TestHealthCacheTTLZeroAndNegative(t *testing.T) {
	checkNoGoroutineLeak(t)
	for _, tc := range []struct {
		ttl time.Duration
		// runs after two probes in a row, then after a third once the
		// result is 1 s old
		second, third int32
	}{
		{0, 1, 2},
		{-time.Second, 2, 3},
		{-time.Nanosecond, 2, 3},
	} {
		t.Run(fmt.Sprint(tc.ttl), func(t *testing.T) {
			h := &Health{CacheTTL: tc.ttl}
			var runs atomic.Int32
			h.AddCheck(Check{Name: "db", Run: func(context.Context) error { runs.Add(1); return nil }})
			srv := healthServer(t, h)
			healthGet(t, srv.URL+"/api/health")
			clockTick()
			healthGet(t, srv.URL+"/api/health")
			at := h.CheckResults()[0].At
			if age := time.Since(at); tc.ttl == 0 && age >= 900*time.Millisecond {
				t.Skipf("the machine is too slow for this test: the second probe came %v after the first result", age)
			}
			if n := runs.Load(); n != tc.second {
				t.Errorf("two probes in a row ran the check %d times, want %d", n, tc.second)
			}
			// Age the cached result by 1 s rather than sleep.
			c := h.reg.Load().checks[0]
			old := *c.last.Load()
			old.at = old.at.Add(-time.Second)
			c.last.Store(&old)
			healthGet(t, srv.URL+"/api/health")
			if n := runs.Load(); n != tc.third {
				t.Errorf("a probe 1 s after the result: the check ran %d times in all, want %d", n, tc.third)
			}
		})
	}
}

// Check.Timeout 0 gives Run a context that ends 2 s after the call;
// negative gives it one that never ends, so a slow check passes.
func TestCheckTimeoutZeroAndNegative(t *testing.T) {
	checkNoGoroutineLeak(t)
	h := &Health{CacheTTL: -1}
	deadlines := make(chan string, 2)
	h.AddCheck(Check{Name: "default", Run: func(ctx context.Context) error {
		deadlines <- "default " + deadlineSeconds(ctx)
		return nil
	}})
	h.AddCheck(Check{Name: "unlimited", Timeout: -1, Run: func(ctx context.Context) error {
		deadlines <- "unlimited " + deadlineSeconds(ctx)
		// Longer than a timeout of 1 ns would allow; it is not cut.
		time.Sleep(20 * time.Millisecond)
		return ctx.Err()
	}})
	srv := healthServer(t, h)
	r := healthGet(t, srv.URL+"/api/health")
	if r.code != http.StatusOK || r.body["unlimited"] != "ok" || r.body["default"] != "ok" {
		t.Errorf("%d %s, want 200 with both checks passing", r.code, r.raw)
	}
	got := []string{<-deadlines, <-deadlines}
	slices.Sort(got)
	if want := []string{"default 2s", "unlimited none"}; !slices.Equal(got, want) {
		t.Errorf("Run's contexts: %q, want %q", got, want)
	}

	// A probe waits for a check without a limit until the probe's own
	// request ends; the check is then reported failed in that answer.
	release := make(chan struct{})
	h = &Health{}
	h.AddCheck(Check{Name: "stuck", Timeout: -1, Run: func(ctx context.Context) error {
		<-release
		return nil
	}})
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/health", nil).WithContext(ctx))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "request ended before the check") {
		t.Errorf("a probe of a stuck check without a limit: %d %s", rec.Code, rec.Body)
	}
}

// Health.Logger: a check that starts failing is logged once (Warn), its
// recovery once (Info), a panic with its stack (Error); nil is silent.
func TestHealthLogger(t *testing.T) {
	checkNoGoroutineLeak(t)
	var logs proctest.SyncBuffer
	h := &Health{CacheTTL: -1, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	var fail, panics atomic.Bool
	h.AddCheck(Check{Name: "db", Run: func(context.Context) error {
		if panics.Load() {
			panic("boom in the check")
		}
		if fail.Load() {
			return errors.New("connection refused")
		}
		return nil
	}})
	srv := healthServer(t, h)
	probe := func(want int) {
		t.Helper()
		if r := healthGet(t, srv.URL+"/api/health"); r.code != want {
			t.Fatalf("%d %s, want %d", r.code, r.raw, want)
		}
	}
	probe(200)
	fail.Store(true)
	probe(503)
	probe(503)
	fail.Store(false)
	probe(200)
	panics.Store(true)
	probe(503)

	text := logs.String()
	for _, want := range []string{
		`level=WARN msg="health check failing" check=db err="connection refused"`,
		`level=INFO msg="health check passing again" check=db`,
		`level=ERROR msg="health check panicked" check=db panic="boom in the check" stack=`,
		`level=WARN msg="health check failing" check=db err="check panicked: boom in the check"`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the log lacks %s:\n%s", want, text)
		}
	}
	if n := strings.Count(text, `msg="health check failing"`); n != 2 {
		t.Errorf("%d failing records, want 2 (one per change):\n%s", n, text)
	}
	if !strings.Contains(text, "TestHealthLogger") {
		t.Errorf("the panic's stack does not name the check's function:\n%s", text)
	}
}
