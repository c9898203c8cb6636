package instancelock

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Liveness answers 503 while a Critical check fails (and 200 when only a
// check that is not Critical fails); readiness reports both.
func TestHealthLivenessCriticalCheck(t *testing.T) {
	st := NewState("")
	st.Set(StatusRunning)
	h := NewHealth(st, nil)
	h.CacheTTL = time.Nanosecond
	var wedged, dbDown atomic.Bool
	h.AddCheck(Check{Name: "worker", Critical: true, Run: func(context.Context) error {
		if wedged.Load() {
			return errors.New("wedged")
		}
		return nil
	}})
	h.AddCheck(Check{Name: "database", Run: func(context.Context) error {
		if dbDown.Load() {
			return errors.New("down")
		}
		return nil
	}})
	get := func(hd http.Handler) (int, string) {
		rec := httptest.NewRecorder()
		hd.ServeHTTP(rec, httptest.NewRequest("GET", "/livez", nil))
		return rec.Code, rec.Body.String()
	}
	for _, tc := range []struct {
		wedged, dbDown bool
		live, ready    int
	}{
		{false, false, 200, 200},
		{false, true, 200, 503},
		{true, false, 503, 503},
	} {
		wedged.Store(tc.wedged)
		dbDown.Store(tc.dbDown)
		clockTick() // the 1 ns cache expires
		if code, body := get(h.Liveness()); code != tc.live {
			t.Errorf("wedged=%v dbDown=%v: liveness %d %s, want %d", tc.wedged, tc.dbDown, code, body, tc.live)
		} else if tc.live == 503 && !strings.Contains(body, `"status":"error"`) {
			t.Errorf("liveness body %s, want status error", body)
		}
		if code, _ := get(h.Readiness()); code != tc.ready {
			t.Errorf("wedged=%v dbDown=%v: readiness %d, want %d", tc.wedged, tc.dbDown, code, tc.ready)
		}
		if err := st.live(context.Background()); (err != nil) != tc.wedged {
			t.Errorf("wedged=%v: State.live = %v", tc.wedged, err)
		}
	}
	// A check still running when the caller's context ends counts as failing.
	block := make(chan struct{})
	defer close(block)
	h2 := NewHealth(nil, nil)
	h2.AddCheck(Check{Name: "slow", Critical: true, Run: func(ctx context.Context) error { <-block; return nil }})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h2.live(ctx); err == nil || !strings.Contains(err.Error(), `"slow"`) {
		t.Errorf("live with an ended context = %v, want an error naming the check", err)
	}
	// While stopping no check runs: the instance is live (draining).
	wedged.Store(true)
	st.Set(StatusStopping)
	if err := h.live(context.Background()); err != nil {
		t.Errorf("live while stopping = %v, want nil", err)
	}
	// No Critical check: nothing runs, live.
	if err := NewHealth(nil, nil).live(context.Background()); err != nil {
		t.Errorf("live without a Critical check = %v", err)
	}
	// Without a Health, the State alone is live until stopped.
	st3 := NewState("")
	if err := st3.live(context.Background()); err != nil {
		t.Errorf("a fresh State is not live: %v", err)
	}
	st3.Set(StatusStopping)
	st3.Set(StatusStopped)
	if err := st3.live(context.Background()); err == nil {
		t.Error("a stopped State is live")
	}
	if err := NewHealth(st3, nil).live(context.Background()); err == nil {
		t.Error("a Health on a stopped State is live")
	}
}

// A 503 from /livez says why, in both formats: "details" maps the failing
// Critical check to its error, and application/health+json's "output" names
// it. A passing /livez has neither.
func TestHealthLivenessSaysWhy(t *testing.T) {
	h := NewHealth(runningState(t), nil)
	h.CacheTTL = -1 // every probe runs the check
	var wedged atomic.Bool
	h.AddCheck(Check{Name: "worker", Critical: true, Run: func(context.Context) error {
		if wedged.Load() {
			return errors.New("no progress for 30s")
		}
		return nil
	}})
	srv := healthServer(t, h)
	r := healthGet(t, srv.URL+"/livez")
	if _, ok := r.body["details"]; r.code != 200 || ok {
		t.Fatalf("passing liveness: %d %s, want 200 without details", r.code, r.raw)
	}
	wedged.Store(true)
	r = healthGet(t, srv.URL+"/livez")
	if r.code != 503 || r.body["status"] != "error" {
		t.Fatalf("liveness: %d %s, want 503 error", r.code, r.raw)
	}
	if d, _ := r.body["details"].(map[string]any); d["worker"] != "no progress for 30s" || len(d) != 1 {
		t.Errorf("liveness details %v, want the failing check and its error", r.body["details"])
	}
	r = healthDo(t, http.MethodGet, srv.URL+"/livez", "application/health+json")
	if r.code != 503 || r.body["status"] != "fail" || r.body["output"] != `critical check "worker": no progress for 30s` {
		t.Errorf("health+json liveness: %d %s, want fail with the check in output", r.code, r.raw)
	}
}
