package instancelock

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestCheckResultsReportsWhatTheProbesSaw(t *testing.T) {
	const slow = 30 * time.Millisecond
	h := NewHealth(nil, nil)
	h.AddCheck(Check{Name: "db", Critical: true, Run: func(ctx context.Context) error {
		time.Sleep(slow)
		return nil
	}})
	h.AddCheck(Check{Name: "cache", Optional: true, Run: func(ctx context.Context) error {
		return errors.New("cache down")
	}})

	before := h.CheckResults()
	if len(before) != 2 || before[0].Name != "db" || before[1].Name != "cache" ||
		!before[1].Optional || before[0].Optional || !before[0].Critical || before[1].Critical {
		t.Fatalf("before any probe: %+v, want critical db then optional cache", before)
	}
	for _, r := range before {
		if r.Ran || r.Err != nil || r.Duration != 0 || !r.At.IsZero() {
			t.Fatalf("check %s reported as run before any probe: %+v", r.Name, r)
		}
	}

	start := time.Now()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/health", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("probe: %d %s, want 200 (the failing check is optional)", rec.Code, rec.Body)
	}
	got := h.CheckResults()
	db, cache := got[0], got[1]
	if !db.Ran || db.Err != nil || db.Duration < slow || db.At.Before(start) {
		t.Errorf("db: %+v, want run, passing, Duration >= %v, At after %v", db, slow, start)
	}
	if !cache.Ran || cache.Err == nil || cache.Err.Error() != "cache down" || cache.At.Before(start) {
		t.Errorf("cache: %+v, want run and failing with \"cache down\"", cache)
	}

	// CheckResults runs nothing: the results stay those of the probe.
	again := h.CheckResults()
	if again[0].At != db.At || again[1].At != cache.At {
		t.Errorf("CheckResults changed the results without a probe: %+v then %+v", got, again)
	}
}

func TestCheckResultsOfATimedOutCheck(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	h := NewHealth(nil, nil)
	h.AddCheck(Check{Name: "stuck", Timeout: 20 * time.Millisecond, Run: func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	}})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("probe: %d, want 503", rec.Code)
	}
	r := h.CheckResults()[0]
	var te *checkTimeoutError
	if !r.Ran || !errors.As(r.Err, &te) || r.Duration < 20*time.Millisecond {
		t.Fatalf("timed-out check: %+v, want a timeout error and Duration >= 20ms", r)
	}
}

func TestHookResultsInRunOrderWithFailures(t *testing.T) {
	g := NewGracefulShutdown(nil)
	g.HookTimeout = 50 * time.Millisecond
	if got := g.HookResults(); len(got) != 0 {
		t.Fatalf("HookResults before the shutdown: %+v, want none", got)
	}
	const slow = 20 * time.Millisecond
	var seenByLast []HookResult
	// Added first, so it runs last: it sees the three before it.
	g.Add("last", func(ctx context.Context) error {
		seenByLast = g.HookResults()
		return nil
	})
	g.Add("ignores its context", func(ctx context.Context) error {
		time.Sleep(g.HookTimeout + 200*time.Millisecond)
		return nil
	})
	g.Add("panics", func(ctx context.Context) error { panic("boom") })
	g.Add("slow", func(ctx context.Context) error {
		time.Sleep(slow)
		return errors.New("flush failed")
	})
	err := g.Shutdown(nil)
	if err == nil {
		t.Fatal("Shutdown: nil, want the hooks' failures")
	}

	got := g.HookResults()
	names := []string{"slow", "panics", "ignores its context", "last"}
	if len(got) != len(names) {
		t.Fatalf("HookResults: %+v, want %d results", got, len(names))
	}
	for i, n := range names {
		if got[i].Name != n {
			t.Fatalf("result %d is %q, want %q (reverse order of Add): %+v", i, got[i].Name, n, got)
		}
	}
	var he *HookError
	if !errors.As(got[0].Err, &he) || he.Name != "slow" || got[0].Duration < slow {
		t.Errorf("slow: %+v, want its *HookError and Duration >= %v", got[0], slow)
	}
	if !errors.As(got[1].Err, &he) || !he.Panicked {
		t.Errorf("panics: %+v, want a *HookError with Panicked", got[1])
	}
	if !errors.Is(got[2].Err, context.DeadlineExceeded) || got[2].Duration < g.HookTimeout {
		t.Errorf("ignores its context: %+v, want abandoned (DeadlineExceeded) after >= %v", got[2], g.HookTimeout)
	}
	if got[3].Err != nil {
		t.Errorf("last: %+v, want success", got[3])
	}
	if len(seenByLast) != 3 || seenByLast[2].Name != "ignores its context" {
		t.Errorf("during the shutdown the last hook saw %+v, want the three hooks before it", seenByLast)
	}
	// The same failures as Wait, in the same order.
	var fromWait []string
	for _, r := range got {
		if r.Err != nil {
			fromWait = append(fromWait, r.Err.Error())
		}
	}
	if want := err.Error(); want != strings.Join(fromWait, "\n") {
		t.Errorf("HookResults errors %q differ from Wait's %q", fromWait, want)
	}
}
