package prom

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock"
	"github.com/ad5dec64/instancelock/instancelocktest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// liveness bounds waits for what should happen soon; never a speed goal.
const liveness = 10 * time.Second

// acquire takes a lock on a fresh PID file with the watch interval given
// (0: the default) and republishing off when disableRepublish.
func acquire(t *testing.T, watch time.Duration, disableRepublish bool) (*instancelock.Locker, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "app.pid")
	lk, err := instancelock.New(path)
	if err != nil {
		t.Fatal(err)
	}
	lk.WatchInterval, lk.DisableRepublish = watch, disableRepublish
	if err := lk.TryLock(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lk.Unlock() })
	return lk, path
}

// gather collects c through a fresh registry (which also checks the
// metrics are consistent with Describe) and returns the families by name.
func gather(t *testing.T, c prometheus.Collector) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// value returns the value of the series of family name whose labels include
// the given name=value pairs, and whether there is one.
func value(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	t.Helper()
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		}
		t.Fatalf("%s: neither gauge nor counter", name)
	}
	return 0, false
}

func mustValue(t *testing.T, mfs map[string]*dto.MetricFamily, want float64, name string, labels ...string) {
	t.Helper()
	v, ok := value(t, mfs, name, labels...)
	if !ok {
		t.Fatalf("no series %s%v; families: %v", name, labels, names(mfs))
	}
	if v != want {
		t.Fatalf("%s%v = %v, want %v", name, labels, v, want)
	}
}

func names(mfs map[string]*dto.MetricFamily) []string {
	var out []string
	for n := range mfs {
		out = append(out, n)
	}
	return out
}

func lint(t *testing.T, c prometheus.Collector) {
	t.Helper()
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// everything returns a collector over a real Locker, a GracefulShutdown, a
// Health with two checks, and the fake fleet lock of instancelocktest, with every metric present.
func everything(t *testing.T) (*Collector, *instancelock.GracefulShutdown) {
	lk, _ := acquire(t, 0, false)
	g := instancelock.NewGracefulShutdown(lk)
	g.Add("close db", func(context.Context) error { return nil })
	g.Add("stop http", func(context.Context) error { return errors.New("boom") })
	h := instancelock.NewHealth(g.State(), lk)
	h.AddCheck(instancelock.Check{Name: "databaseStatus", Run: func(context.Context) error { return nil }})
	h.AddCheck(instancelock.Check{Name: "cache", Optional: true, Run: func(context.Context) error { return errors.New("down") }})
	probe(t, h)
	fl := instancelocktest.NewMutex()
	if err := fl.TryLock(); err != nil {
		t.Fatal(err)
	}
	return New(WithLock("pidfile", lk), WithLock("fleet", fl), WithShutdown(g), WithHealth(h)), g
}

func probe(t testing.TB, h http.Handler) int {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	return rec.Code
}

func TestCollectAndLintFindsNothing(t *testing.T) {
	c, g := everything(t)
	lint(t, c)
	if err := g.Shutdown(nil); err == nil {
		t.Fatal("Shutdown: nil, want the failing hook")
	}
	lint(t, c) // with the hook metrics
	mfs := gather(t, c)
	for _, n := range []string{
		"instancelock_info", "instancelock_start_time_seconds", "instancelock_state",
		"instancelock_lock_held", "instancelock_lock_losses_total", "instancelock_lock_fencing_token",
		"instancelock_lock_takeovers_total", "instancelock_check_success", "instancelock_check_duration_seconds",
		"instancelock_check_last_run_timestamp_seconds", "instancelock_shutdown_hook_duration_seconds",
		"instancelock_shutdown_hook_failures_total",
	} {
		if mfs[n] == nil && n != "instancelock_lock_fencing_token" {
			t.Errorf("family %s missing; have %v", n, names(mfs))
		}
	}
	// And the empty collector is fine too.
	lint(t, New())
}

func TestLockHeldAndLost(t *testing.T) {
	lk, path := acquire(t, 10*time.Millisecond, true)
	c := New(WithLock("pidfile", lk))
	mfs := gather(t, c)
	mustValue(t, mfs, 1, "instancelock_lock_held", "lock", "pidfile")
	mustValue(t, mfs, 0, "instancelock_lock_losses_total", "lock", "pidfile")
	mustValue(t, mfs, 1, "instancelock_info", "instance_id", lk.InstanceID())
	if _, ok := value(t, mfs, "instancelock_lock_takeovers_total"); ok {
		t.Error("takeovers reported for the PID-file lock, which is no fleet lock")
	}

	// rm of the PID file: without republishing, the watcher reports the loss.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lk.Lost():
	case <-time.After(liveness):
		t.Fatal("the Locker did not notice its PID file removed")
	}
	for range 2 { // a second scrape does not count it again
		mfs = gather(t, c)
		mustValue(t, mfs, 0, "instancelock_lock_held", "lock", "pidfile")
		mustValue(t, mfs, 1, "instancelock_lock_losses_total", "lock", "pidfile")
	}

	// Released (Lost() is nil now), taken again: held, the loss still counted.
	if err := lk.Unlock(); err != nil {
		t.Fatal(err)
	}
	mfs = gather(t, c)
	mustValue(t, mfs, 0, "instancelock_lock_held", "lock", "pidfile")
	mustValue(t, mfs, 1, "instancelock_lock_losses_total", "lock", "pidfile")
	if err := lk.TryLock(); err != nil {
		t.Fatal(err)
	}
	mfs = gather(t, c)
	mustValue(t, mfs, 1, "instancelock_lock_held", "lock", "pidfile")
	mustValue(t, mfs, 1, "instancelock_lock_losses_total", "lock", "pidfile")
}

func TestLockLostAndUnlockedBetweenScrapesIsCounted(t *testing.T) {
	lk, path := acquire(t, 10*time.Millisecond, true)
	c := New(WithLock("pidfile", lk))
	mustValue(t, gather(t, c), 0, "instancelock_lock_losses_total", "lock", "pidfile")
	os.Remove(path)
	<-lk.Lost()
	lk.Unlock() // Lost() is nil from here on; the collector saw the holding before
	mustValue(t, gather(t, c), 1, "instancelock_lock_losses_total", "lock", "pidfile")
}

func TestLifecycleState(t *testing.T) {
	lk, _ := acquire(t, 0, false)
	g := instancelock.NewGracefulShutdown(lk)
	c := New(WithShutdown(g))
	wantState := func(cur string) {
		t.Helper()
		mfs := gather(t, c)
		for _, s := range []string{"starting", "running", "stopping", "stopped"} {
			want := 0.0
			if s == cur {
				want = 1
			}
			mustValue(t, mfs, want, "instancelock_state", "state", s)
		}
		mustValue(t, mfs, float64(g.State().StartedAt().UnixNano())/1e9, "instancelock_start_time_seconds")
		mustValue(t, mfs, 1, "instancelock_info", "instance_id", lk.InstanceID())
	}
	wantState("starting")
	g.State().Set(instancelock.StatusRunning)
	wantState("running")

	// During the shutdown, from inside a hook: stopping.
	var mid map[string]*dto.MetricFamily
	g.Add("look", func(context.Context) error { mid = gather(t, c); return nil })
	g.Shutdown(nil)
	mustValue(t, mid, 1, "instancelock_state", "state", "stopping")
	wantState("stopped")
}

func TestChecks(t *testing.T) {
	const slow = 25 * time.Millisecond
	h := instancelock.NewHealth(nil, nil)
	fail := make(chan bool, 1)
	fail <- false
	h.CacheTTL = time.Nanosecond // every probe runs the checks
	h.AddCheck(instancelock.Check{Name: "databaseStatus", Run: func(context.Context) error {
		time.Sleep(slow)
		if f := <-fail; f {
			fail <- f
			return errors.New("disconnected")
		}
		fail <- false
		return nil
	}})
	h.AddCheck(instancelock.Check{Name: "file", Critical: true, Run: func(context.Context) error { return nil }})
	c := New(WithHealth(h))

	// Before any probe: no check series (nothing to report), and no run.
	mfs := gather(t, c)
	if _, ok := value(t, mfs, "instancelock_check_success"); ok {
		t.Fatal("check series before any probe ran the checks")
	}

	before := time.Now()
	if code := probe(t, h); code != http.StatusOK {
		t.Fatalf("probe: %d", code)
	}
	mfs = gather(t, c)
	mustValue(t, mfs, 1, "instancelock_check_success", "check", "databaseStatus", "optional", "false")
	mustValue(t, mfs, 1, "instancelock_check_success", "check", "databaseStatus", "critical", "false")
	mustValue(t, mfs, 1, "instancelock_check_success", "check", "file", "optional", "false", "critical", "true")
	d, _ := value(t, mfs, "instancelock_check_duration_seconds", "check", "databaseStatus")
	if d < slow.Seconds() {
		t.Errorf("check duration %vs, want >= %v", d, slow)
	}
	at, _ := value(t, mfs, "instancelock_check_last_run_timestamp_seconds", "check", "databaseStatus")
	if at < float64(before.UnixNano())/1e9 {
		t.Errorf("check last run %v, before the probe began (%v)", at, before)
	}

	<-fail
	fail <- true
	if code := probe(t, h); code != http.StatusServiceUnavailable {
		t.Fatalf("probe with the database down: %d, want 503", code)
	}
	mustValue(t, gather(t, c), 0, "instancelock_check_success", "check", "databaseStatus", "optional", "false")
}

func TestShutdownHooks(t *testing.T) {
	const slow = 20 * time.Millisecond
	g := instancelock.NewGracefulShutdown(nil)
	c := New(WithShutdown(g))
	if _, ok := gather(t, c)["instancelock_shutdown_hook_duration_seconds"]; ok {
		t.Fatal("hook series before the shutdown")
	}
	g.Add("close database", func(context.Context) error { time.Sleep(slow); return nil })
	g.Add("flush", func(context.Context) error { return errors.New("disk full") })
	g.Add("flush", func(context.Context) error { panic("again") }) // same name: summed
	g.Add("http server", func(context.Context) error { return nil })
	g.Shutdown(nil)

	mfs := gather(t, c)
	mustValue(t, mfs, 0, "instancelock_shutdown_hook_failures_total", "hook", "close database")
	mustValue(t, mfs, 2, "instancelock_shutdown_hook_failures_total", "hook", "flush")
	mustValue(t, mfs, 0, "instancelock_shutdown_hook_failures_total", "hook", "http server")
	d, _ := value(t, mfs, "instancelock_shutdown_hook_duration_seconds", "hook", "close database")
	if d < slow.Seconds() {
		t.Errorf("close database took %vs, want >= %v", d, slow)
	}
	if n := len(mfs["instancelock_shutdown_hook_duration_seconds"].GetMetric()); n != 3 {
		t.Errorf("%d hook duration series, want 3 (one per name)", n)
	}
}

func TestFleetLockTokenAndTakeovers(t *testing.T) {
	fl := instancelocktest.NewMutex()
	var mu sync.Mutex
	var current instancelock.Mutex // nil: not opened yet
	c := New(WithLockFunc("fleet", func() instancelock.Mutex {
		mu.Lock()
		defer mu.Unlock()
		return current
	}))
	mfs := gather(t, c)
	mustValue(t, mfs, 0, "instancelock_lock_held", "lock", "fleet")

	mu.Lock()
	current = fl
	mu.Unlock()
	mfs = gather(t, c)
	mustValue(t, mfs, 0, "instancelock_lock_held", "lock", "fleet")
	mustValue(t, mfs, 0, "instancelock_lock_takeovers_total", "lock", "fleet")
	if _, ok := value(t, mfs, "instancelock_lock_fencing_token"); ok {
		t.Fatal("a fencing token while not held")
	}

	fl.TryLock() // token 1
	mfs = gather(t, c)
	mustValue(t, mfs, 1, "instancelock_lock_held", "lock", "fleet")
	mustValue(t, mfs, 1, "instancelock_lock_fencing_token", "lock", "fleet")
	mustValue(t, mfs, 1, "instancelock_lock_takeovers_total", "lock", "fleet")
	mustValue(t, gather(t, c), 1, "instancelock_lock_takeovers_total", "lock", "fleet") // counted once

	fl.Lose(nil)
	fl.Unlock()  // a lost holding is kept until Unlock, as with the real locks
	fl.TryLock() // token 2: taken back after the loss
	mfs = gather(t, c)
	mustValue(t, mfs, 1, "instancelock_lock_held", "lock", "fleet")
	mustValue(t, mfs, 2, "instancelock_lock_fencing_token", "lock", "fleet")
	mustValue(t, mfs, 2, "instancelock_lock_takeovers_total", "lock", "fleet")
	mustValue(t, mfs, 1, "instancelock_lock_losses_total", "lock", "fleet")

	fl.Unlock()
	mfs = gather(t, c)
	mustValue(t, mfs, 0, "instancelock_lock_held", "lock", "fleet")
	mustValue(t, mfs, 1, "instancelock_lock_losses_total", "lock", "fleet") // a release is no loss
}

func TestOptionsPanicOnProgrammerErrors(t *testing.T) {
	lk, _ := acquire(t, 0, false)
	for name, f := range map[string]func(){
		"nil Mutex":      func() { WithLock("x", nil) },
		"nil *Locker":    func() { WithLock("x", (*instancelock.Locker)(nil)) },
		"nil func":       func() { WithLockFunc("x", nil) },
		"empty name":     func() { New(WithLock("", lk)) },
		"duplicate name": func() { New(WithLock("a", lk), WithLock("a", lk)) },
	} {
		func() {
			defer func() {
				r := recover()
				if r == nil || !strings.HasPrefix(r.(string), "prom: ") {
					t.Errorf("%s: recovered %v, want a prom: panic", name, r)
				}
			}()
			f()
		}()
	}
}
