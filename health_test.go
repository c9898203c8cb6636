package instancelock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// healthServer mounts h at /api/health and /readyz, and its liveness
// variant at /livez, on a real listener.
func healthServer(t *testing.T, h *Health) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/api/health", h)
	mux.Handle("/readyz", h.Readiness())
	mux.Handle("/livez", h.Liveness())
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Client().CloseIdleConnections()
		srv.Close()
	})
	return srv
}

// healthResponse is one answer, body decoded.
type healthResponse struct {
	code int
	hdr  http.Header
	raw  string
	body map[string]any
}

// healthDo sends method to url with the given Accept header and decodes a
// JSON body.
func healthDo(t *testing.T, method, url, accept string) healthResponse {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := healthResponse{code: resp.StatusCode, hdr: resp.Header, raw: string(data)}
	if len(data) > 0 && strings.Contains(resp.Header.Get("Content-Type"), "json") {
		if err := json.Unmarshal(data, &r.body); err != nil {
			t.Fatalf("%s %s: invalid JSON %q: %v", method, url, data, err)
		}
	}
	return r
}

func healthGet(t *testing.T, url string) healthResponse {
	t.Helper()
	return healthDo(t, http.MethodGet, url, "")
}

// serveDirect calls h.ServeHTTP through an httptest recorder.
func serveDirect(t *testing.T, h http.Handler, accept string) healthResponse {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/api/health", nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	r := healthResponse{code: rec.Code, hdr: rec.Header(), raw: rec.Body.String()}
	if err := json.Unmarshal(rec.Body.Bytes(), &r.body); err != nil {
		t.Fatalf("invalid JSON %q: %v", rec.Body.String(), err)
	}
	return r
}

func runningState(t *testing.T) *State {
	t.Helper()
	st := NewState("")
	if err := st.Set(StatusRunning); err != nil {
		t.Fatal(err)
	}
	return st
}

// wantNumber returns body[key] as an integer, failing unless it is a JSON
// number with no fraction.
func wantNumber(t *testing.T, body map[string]any, key string) int64 {
	t.Helper()
	v, ok := body[key].(float64)
	if !ok {
		t.Fatalf("%q = %#v (%T), want a number; body %v", key, body[key], body[key], body)
	}
	if v != float64(int64(v)) {
		t.Fatalf("%q = %v, want a whole number", key, v)
	}
	return int64(v)
}

func wantString(t *testing.T, body map[string]any, key string) string {
	t.Helper()
	v, ok := body[key].(string)
	if !ok {
		t.Fatalf("%q = %#v (%T), want a string; body %v", key, body[key], body[key], body)
	}
	return v
}

const jsTime = "2006-01-02T15:04:05.000Z"

func TestHealthSpecResponse(t *testing.T) {
	st := runningState(t)
	h := NewHealth(st, nil)
	var active, total atomic.Int64
	active.Store(2)
	total.Store(5)
	h.AddCounter("activeAgents", func() int { return int(active.Load()) })
	h.AddCounter("totalAgents", func() int { return int(total.Load()) })
	h.AddCheck(Check{Name: "databaseStatus", Run: func(context.Context) error { return nil }, Pass: "connected", Fail: "disconnected"})
	srv := healthServer(t, h)

	before := time.Now()
	r := healthGet(t, srv.URL+"/api/health")
	if r.code != http.StatusOK {
		t.Fatalf("code %d, want 200: %s", r.code, r.raw)
	}
	for k, want := range map[string]string{
		"Content-Type": "application/json", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
	} {
		if got := r.hdr.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	b := r.body
	if s := wantString(t, b, "status"); s != "ok" {
		t.Errorf("status %q, want ok", s)
	}
	if pid := wantNumber(t, b, "pid"); pid != int64(os.Getpid()) {
		t.Errorf("pid %d, want %d", pid, os.Getpid())
	}
	if up := wantNumber(t, b, "uptime"); up < 0 || up > int64(time.Since(st.StartedAt())/time.Second)+1 {
		t.Errorf("uptime %d out of range", up)
	}
	mem, ok := b["memoryUsage"].(map[string]any)
	if !ok {
		t.Fatalf("memoryUsage = %#v, want an object", b["memoryUsage"])
	}
	keys := []string{"heapUsed", "heapTotal", "external"}
	if runtime.GOOS == "linux" || runtime.GOOS == "windows" {
		keys = append(keys, "rss")
	} else if _, ok := mem["rss"]; ok {
		t.Errorf("rss present on %s", runtime.GOOS)
	}
	for _, k := range keys {
		if v := wantNumber(t, mem, k); v <= 0 {
			t.Errorf("memoryUsage.%s = %d, want > 0", k, v)
		}
	}
	if wantNumber(t, mem, "heapUsed") > wantNumber(t, mem, "heapTotal") {
		t.Errorf("heapUsed > heapTotal: %v", mem)
	}
	if n := wantNumber(t, b, "activeAgents"); n != 2 {
		t.Errorf("activeAgents %d, want 2", n)
	}
	if n := wantNumber(t, b, "totalAgents"); n != 5 {
		t.Errorf("totalAgents %d, want 5", n)
	}
	if s := wantString(t, b, "databaseStatus"); s != "connected" {
		t.Errorf("databaseStatus %q, want connected", s)
	}
	started, err := time.Parse(jsTime, wantString(t, b, "startedAt"))
	if err != nil {
		t.Fatal(err)
	}
	if !started.Equal(st.StartedAt().Truncate(time.Millisecond)) {
		t.Errorf("startedAt %v, want %v", started, st.StartedAt().UTC())
	}
	ts, err := time.Parse(jsTime, wantString(t, b, "timestamp"))
	if err != nil {
		t.Fatal(err)
	}
	if ts.Before(before.Truncate(time.Millisecond)) || ts.After(time.Now()) {
		t.Errorf("timestamp %v not within the request", ts)
	}
	if id := wantString(t, b, "instanceId"); id != st.InstanceID() {
		t.Errorf("instanceId %q, want %q", id, st.InstanceID())
	}
	if _, ok := b["details"]; ok {
		t.Errorf("details present while everything passes: %v", b)
	}
	// The order of the fields is the spec's.
	order := []string{`"status"`, `"pid"`, `"uptime"`, `"memoryUsage"`, `"activeAgents"`, `"totalAgents"`, `"databaseStatus"`, `"startedAt"`, `"timestamp"`}
	last := -1
	for _, k := range order {
		i := strings.Index(r.raw, k)
		if i <= last {
			t.Errorf("field %s out of order in %s", k, r.raw)
		}
		last = i
	}

	// Counters are read on every request; uptime grows.
	active.Store(3)
	total.Store(9)
	time.Sleep(1100 * time.Millisecond)
	r2 := healthGet(t, srv.URL+"/api/health")
	if n := wantNumber(t, r2.body, "activeAgents"); n != 3 {
		t.Errorf("activeAgents %d after the change, want 3", n)
	}
	if n := wantNumber(t, r2.body, "totalAgents"); n != 9 {
		t.Errorf("totalAgents %d after the change, want 9", n)
	}
	if up1, up2 := wantNumber(t, b, "uptime"), wantNumber(t, r2.body, "uptime"); up2 <= up1 {
		t.Errorf("uptime did not grow: %d then %d", up1, up2)
	}
}

func TestHealthStartedAtWithoutState(t *testing.T) {
	h := NewHealth(nil, nil)
	r := serveDirect(t, h, "")
	if r.code != http.StatusOK || r.body["status"] != "ok" {
		t.Fatalf("nil state: %d %s, want 200 ok", r.code, r.raw)
	}
	started, err := time.Parse(jsTime, wantString(t, r.body, "startedAt"))
	if err != nil {
		t.Fatal(err)
	}
	if started.After(time.Now()) || time.Since(started) > time.Hour {
		t.Errorf("startedAt %v is not this process's start", started)
	}
	if _, ok := r.body["instanceId"]; ok {
		t.Errorf("instanceId without a State or Locker: %s", r.raw)
	}
}

func TestHealthFailingCheckFlipsStatus(t *testing.T) {
	h := NewHealth(runningState(t), nil)
	h.CacheTTL = 10 * time.Millisecond
	var fail atomic.Bool
	h.AddCheck(Check{Name: "databaseStatus", Pass: "connected", Fail: "disconnected", Run: func(context.Context) error {
		if fail.Load() {
			return errors.New(`dial tcp 127.0.0.1:5432: connect: connection refused <"db">`)
		}
		return nil
	}})
	h.AddCheck(Check{Name: "cache", Optional: true, Run: func(context.Context) error { return nil }})
	srv := healthServer(t, h)

	// eventually polls until the answer has the wanted code (the cached
	// result expires after CacheTTL).
	eventually := func(code int) healthResponse {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			r := healthGet(t, srv.URL+"/api/health")
			if r.code == code || time.Now().After(deadline) {
				return r
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	r := eventually(http.StatusOK)
	if r.code != 200 || r.body["databaseStatus"] != "connected" || r.body["cache"] != "ok" {
		t.Fatalf("passing: %d %s", r.code, r.raw)
	}
	fail.Store(true)
	r = eventually(http.StatusServiceUnavailable)
	if r.code != 503 || r.body["status"] != "error" || r.body["databaseStatus"] != "disconnected" {
		t.Fatalf("failing database: %d %s, want 503 error disconnected", r.code, r.raw)
	}
	details, _ := r.body["details"].(map[string]any)
	if got := details["databaseStatus"]; got != `dial tcp 127.0.0.1:5432: connect: connection refused <"db">` {
		t.Errorf("details.databaseStatus = %#v; body %s", got, r.raw)
	}
	if _, ok := details["cache"]; ok {
		t.Errorf("a passing check in details: %s", r.raw)
	}
	fail.Store(false)
	if r = eventually(http.StatusOK); r.code != 200 || r.body["status"] != "ok" {
		t.Fatalf("recovered: %d %s, want 200 ok", r.code, r.raw)
	}
}

func TestHealthOptionalCheckDegrades(t *testing.T) {
	h := NewHealth(runningState(t), nil)
	h.AddCheck(Check{Name: "databaseStatus", Run: func(context.Context) error { return nil }})
	h.AddCheck(Check{Name: "searchIndex", Optional: true, Fail: "unreachable", Run: func(context.Context) error { return errors.New("index offline") }})
	r := serveDirect(t, h, "")
	if r.code != 200 || r.body["status"] != "degraded" || r.body["searchIndex"] != "unreachable" || r.body["databaseStatus"] != "ok" {
		t.Fatalf("optional failure: %d %s, want 200 degraded", r.code, r.raw)
	}
	if d, _ := r.body["details"].(map[string]any); d["searchIndex"] != "index offline" {
		t.Errorf("details: %s", r.raw)
	}
	hj := serveDirect(t, h, "application/health+json")
	if hj.code != 200 || hj.body["status"] != "warn" {
		t.Errorf("health+json of a degraded instance: %d %s, want 200 warn", hj.code, hj.raw)
	}
}

func TestHealthSlowCheckTimesOut(t *testing.T) {
	checkNoGoroutineLeak(t)
	h := NewHealth(runningState(t), nil)
	h.CacheTTL = time.Millisecond
	release := make(chan struct{})
	var released sync.Once
	t.Cleanup(func() { released.Do(func() { close(release) }) })
	var obedientRuns, stubbornRuns atomic.Int32
	h.AddCheck(Check{Name: "databaseStatus", Timeout: 50 * time.Millisecond, Pass: "connected", Fail: "disconnected",
		Run: func(ctx context.Context) error {
			obedientRuns.Add(1)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-release:
				return nil
			}
		}})
	// This one ignores its context: it returns only when the test lets it.
	h.AddCheck(Check{Name: "stubborn", Timeout: 50 * time.Millisecond, Run: func(context.Context) error {
		stubbornRuns.Add(1)
		<-release
		return nil
	}})
	srv := healthServer(t, h)

	r := healthGet(t, srv.URL+"/api/health") // returns although both checks are still blocked
	if r.code != 503 || r.body["databaseStatus"] != "disconnected" || r.body["stubborn"] != "error" {
		t.Fatalf("slow checks: %d %s, want 503 with both failed", r.code, r.raw)
	}
	d, _ := r.body["details"].(map[string]any)
	for _, name := range []string{"databaseStatus", "stubborn"} {
		if s, _ := d[name].(string); s != "check timed out after 50ms" {
			t.Errorf("details.%s = %q, want the timeout", name, s)
		}
	}
	// The stubborn check is still inside Run: later requests do not start
	// it again (no pile of goroutines), they report it still running.
	time.Sleep(5 * time.Millisecond)
	r = healthGet(t, srv.URL+"/api/health")
	d, _ = r.body["details"].(map[string]any)
	if s, _ := d["stubborn"].(string); !strings.Contains(s, "has not returned") {
		t.Errorf("second request: details.stubborn = %q, want a still-running failure; %s", s, r.raw)
	}
	if n := stubbornRuns.Load(); n != 1 {
		t.Errorf("the stubborn check was started %d times while its first run had not returned, want 1", n)
	}
	if n := obedientRuns.Load(); n != 2 {
		t.Errorf("the obedient check ran %d times, want 2 (once per expired cache)", n)
	}
	released.Do(func() { close(release) })
	// Once it returned, it is run again and passes.
	deadline := time.Now().Add(10 * time.Second)
	for r.code != 200 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		r = healthGet(t, srv.URL+"/api/health")
	}
	if r.code != 200 || r.body["stubborn"] != "ok" {
		t.Fatalf("after release: %d %s, want 200", r.code, r.raw)
	}
}

func TestHealthPanickingCheck(t *testing.T) {
	checkNoGoroutineLeak(t)
	h := NewHealth(runningState(t), nil)
	h.AddCheck(Check{Name: "databaseStatus", Run: func(context.Context) error { panic("driver bug") }})
	h.AddCheck(Check{Name: "quitter", Run: func(context.Context) error { runtime.Goexit(); return nil }})
	r := serveDirect(t, h, "")
	if r.code != 503 || r.body["databaseStatus"] != "error" || r.body["quitter"] != "error" {
		t.Fatalf("panicking check: %d %s, want 503", r.code, r.raw)
	}
	d, _ := r.body["details"].(map[string]any)
	if s, _ := d["databaseStatus"].(string); s != "check panicked: driver bug" {
		t.Errorf("details.databaseStatus = %q", s)
	}
	if s, _ := d["quitter"].(string); !strings.Contains(s, "Goexit") {
		t.Errorf("details.quitter = %q", s)
	}
}

// nilPointerError is an error type whose Error method dereferences its
// receiver, as many do: a check that returns a typed nil *nilPointerError
// returns a non-nil error whose Error method panics.
type nilPointerError struct{ msg string }

func (e *nilPointerError) Error() string { return e.msg }

func TestHealthCheckWithPanickingError(t *testing.T) {
	checkNoGoroutineLeak(t)
	h := NewHealth(runningState(t), nil)
	h.AddCheck(Check{Name: "db", Run: func(context.Context) error {
		var e *nilPointerError
		return e
	}})
	for _, accept := range []string{"", "application/health+json"} {
		r := serveDirect(t, h, accept)
		if r.code != 503 {
			t.Fatalf("Accept %q: %d %s, want 503", accept, r.code, r.raw)
		}
		if !strings.Contains(r.raw, "*instancelock.nilPointerError whose Error method panicked") {
			t.Errorf("Accept %q: body %s does not say what the check returned", accept, r.raw)
		}
	}
}

// isPanicError is an error whose Is method panics, as a careless
// implementation comparing fields of a nil receiver would.
type isPanicError struct{ inner *nilPointerError }

func (e isPanicError) Error() string        { return "gave up" }
func (e isPanicError) Is(target error) bool { return e.inner.msg == target.Error() }

// A check that returns, after its timeout, an error whose Is method
// panics is reported failed with its own message: the comparison with the
// timeout cannot take the process down.
func TestHealthCheckWithPanickingIs(t *testing.T) {
	checkNoGoroutineLeak(t)
	h := NewHealth(runningState(t), nil)
	h.AddCheck(Check{Name: "db", Timeout: 10 * time.Millisecond, Run: func(ctx context.Context) error {
		<-ctx.Done()
		return isPanicError{}
	}})
	r := serveDirect(t, h, "")
	if r.code != 503 {
		t.Fatalf("%d %s, want 503", r.code, r.raw)
	}
	// The flight may end at the timeout (the timeout's message) or when
	// Run returned (its own): either way a failure, and no crash.
	if d, _ := r.body["details"].(map[string]any); d["db"] == nil {
		t.Fatalf("no details for db: %s", r.raw)
	}
	// Run has returned by now: its own result is what a later probe sees
	// once the cache expires, through isCause.
	if !isCause(context.DeadlineExceeded, context.DeadlineExceeded) || isCause(isPanicError{}, context.DeadlineExceeded) {
		t.Fatal("isCause: want errors.Is, and false when Is panics")
	}
}

// TestHealthRegistrationIsLinear checks that registering one more counter
// costs the same whatever the number already registered: the registry is
// shared between registrations, not copied (copying made 50,000 counters
// take 35-46 s). It measures bytes allocated, not time.
func TestHealthRegistrationIsLinear(t *testing.T) {
	h := NewHealth(runningState(t), nil)
	const n, m = 20000, 1000
	for i := range n {
		h.AddCounter(fmt.Sprintf("c%d", i), func() int { return i })
	}
	names := make([]string, m)
	for i := range names {
		names[i] = fmt.Sprintf("d%d", i)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i, name := range names {
		h.AddCounter(name, func() int { return n + i })
	}
	runtime.ReadMemStats(&after)
	// A copy of 20,000 counters is over 1 MB; one registration with the
	// slices growing by doubling averages well under 4 KiB.
	if per := (after.TotalAlloc - before.TotalAlloc) / m; per > 4<<10 {
		t.Errorf("one AddCounter with %d registered allocates %d bytes: registration copies the registry", n, per)
	}
	r := serveDirect(t, h, "")
	for _, i := range []int{0, n / 2, n - 1} {
		if got := wantNumber(t, r.body, fmt.Sprintf("c%d", i)); got != int64(i) {
			t.Errorf("c%d = %d", i, got)
		}
	}
	if got := wantNumber(t, r.body, names[m-1]); got != n+m-1 {
		t.Errorf("%s = %d", names[m-1], got)
	}
}

func TestHealthLifecycle(t *testing.T) {
	st := NewState("")
	h := NewHealth(st, nil)
	h.CacheTTL = time.Hour
	var runs atomic.Int32
	h.AddCheck(Check{Name: "databaseStatus", Run: func(context.Context) error { runs.Add(1); return nil }})
	srv := healthServer(t, h)
	steps := []struct {
		to                  Status
		ready, live         int
		readyWord, liveWord string
		readyHJ             string
		checkField          bool
	}{
		{StatusStarting, 503, 200, "starting", "starting", "fail", true},
		{StatusRunning, 200, 200, "ok", "ok", "pass", true},
		{StatusStopping, 503, 200, "stopping", "stopping", "fail", false},
		{StatusStopped, 503, 503, "stopped", "stopped", "fail", false},
	}
	for _, s := range steps {
		if err := st.Set(s.to); err != nil {
			t.Fatal(err)
		}
		for _, path := range []string{"/api/health", "/readyz"} {
			r := healthGet(t, srv.URL+path)
			if r.code != s.ready || r.body["status"] != s.readyWord {
				t.Errorf("%s %s: %d %s, want %d %q", s.to, path, r.code, r.raw, s.ready, s.readyWord)
			}
			if _, ok := r.body["databaseStatus"]; ok != s.checkField {
				t.Errorf("%s %s: check field present %v, want %v: %s", s.to, path, ok, s.checkField, r.raw)
			}
		}
		r := healthGet(t, srv.URL+"/livez")
		if r.code != s.live || r.body["status"] != s.liveWord {
			t.Errorf("%s /livez: %d %s, want %d %q", s.to, r.code, r.raw, s.live, s.liveWord)
		}
		if _, ok := r.body["databaseStatus"]; ok {
			t.Errorf("liveness runs checks: %s", r.raw)
		}
		if _, ok := r.body["pid"]; !ok {
			t.Errorf("liveness without metadata: %s", r.raw)
		}
		hj := healthDo(t, http.MethodGet, srv.URL+"/readyz", "application/health+json")
		if hj.code != s.ready || hj.body["status"] != s.readyHJ {
			t.Errorf("%s /readyz health+json: %d %s, want %d %q", s.to, hj.code, hj.raw, s.ready, s.readyHJ)
		}
		if s.to != StatusRunning && hj.body["output"] != s.to.String() {
			t.Errorf("%s health+json output %v, want %q", s.to, hj.body["output"], s.to)
		}
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("the check ran %d times, want 1 (cached while starting and running, not run while stopping)", n)
	}
}

func TestHealthLockLost(t *testing.T) {
	checkNoGoroutineLeak(t)
	path := filepath.Join(t.TempDir(), "data", "backend.pid")
	lfs := newLosableFS()
	lk, err := newWith(path, lfs.use, watchEvery(10*time.Millisecond), noRepublish)
	if err != nil {
		t.Fatal(err)
	}
	if err := lk.TryLock(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lk.Unlock() })
	h := NewHealth(nil, lk)
	srv := healthServer(t, h)

	r := healthGet(t, srv.URL+"/readyz")
	if r.code != 200 || r.body["status"] != "ok" {
		t.Fatalf("lock held: %d %s, want 200 ok", r.code, r.raw)
	}
	if id := r.body["instanceId"]; id != lk.InstanceID() {
		t.Errorf("instanceId %v, want the Locker's %q", id, lk.InstanceID())
	}
	if err := lfs.remove(path); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !errors.Is(lk.Err(), ErrLockLost); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the Locker did not notice the removal: Err() = %v", lk.Err())
		}
	}
	r = healthGet(t, srv.URL+"/readyz")
	if r.code != 503 || r.body["status"] != "error" {
		t.Fatalf("lock lost: %d %s, want 503 error", r.code, r.raw)
	}
	d, _ := r.body["details"].(map[string]any)
	if s, _ := d["lock"].(string); !strings.Contains(s, ErrLockLost.Error()) {
		t.Errorf("details.lock = %q, want the lock-lost error", s)
	}
	hj := healthDo(t, http.MethodGet, srv.URL+"/readyz", "application/health+json")
	if hj.code != 503 || hj.body["status"] != "fail" || !strings.Contains(fmt.Sprint(hj.body["output"]), "lock lost") {
		t.Errorf("lock lost, health+json: %d %s", hj.code, hj.raw)
	}
	if r := healthGet(t, srv.URL+"/livez"); r.code != 200 {
		t.Errorf("liveness after the lock was lost: %d, want 200 (the process can still serve)", r.code)
	}
	if err := lk.Unlock(); err != nil {
		t.Fatal(err)
	}
	if r := healthGet(t, srv.URL+"/readyz"); r.code != 503 {
		t.Errorf("lock released: %d, want 503", r.code)
	}
}

func TestHealthJSONFormat(t *testing.T) {
	st := runningState(t)
	h := NewHealth(st, nil)
	h.AddCounter("activeAgents", func() int { return 4 })
	var fail atomic.Bool
	h.CacheTTL = time.Nanosecond
	h.AddCheck(Check{Name: "databaseStatus", Run: func(context.Context) error {
		if fail.Load() {
			return errors.New("connection refused")
		}
		return nil
	}})
	srv := healthServer(t, h)
	r := healthDo(t, http.MethodGet, srv.URL+"/api/health", "text/html;q=0.5, Application/Health+JSON")
	if r.code != 200 || r.hdr.Get("Content-Type") != "application/health+json" {
		t.Fatalf("health+json: %d %q %s", r.code, r.hdr.Get("Content-Type"), r.raw)
	}
	if r.hdr.Get("Cache-Control") != "no-store" || r.hdr.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("headers %v", r.hdr)
	}
	if r.body["status"] != "pass" || r.body["serviceId"] != st.InstanceID() {
		t.Errorf("body %s", r.raw)
	}
	if _, ok := r.body["output"]; ok {
		t.Errorf("output on pass: %s", r.raw)
	}
	checks, ok := r.body["checks"].(map[string]any)
	if !ok {
		t.Fatalf("no checks object: %s", r.raw)
	}
	entry := func(key string) map[string]any {
		t.Helper()
		list, ok := checks[key].([]any)
		if !ok || len(list) != 1 {
			t.Fatalf("checks[%q] = %#v, want a list of one", key, checks[key])
		}
		m, _ := list[0].(map[string]any)
		if _, err := time.Parse(jsTime, fmt.Sprint(m["time"])); err != nil {
			t.Errorf("checks[%q].time: %v", key, err)
		}
		return m
	}
	up := entry("uptime")
	if up["componentType"] != "system" || up["observedUnit"] != "s" || up["status"] != "pass" {
		t.Errorf("uptime %v", up)
	}
	if v, ok := up["observedValue"].(float64); !ok || v < 0 {
		t.Errorf("uptime observedValue %v", up["observedValue"])
	}
	if m := entry("memory:heapUsed"); m["observedUnit"] != "bytes" || m["observedValue"].(float64) <= 0 {
		t.Errorf("memory:heapUsed %v", m)
	}
	if m := entry("activeAgents"); m["observedValue"] != 4.0 {
		t.Errorf("activeAgents %v", m)
	}
	db := entry("databaseStatus:responseTime")
	if db["componentType"] != "component" || db["observedUnit"] != "ms" || db["status"] != "pass" {
		t.Errorf("databaseStatus:responseTime %v", db)
	}
	fail.Store(true)
	clockTick() // the 1 ns cache expires
	time.Sleep(time.Millisecond)
	r = healthDo(t, http.MethodGet, srv.URL+"/api/health", "application/health+json")
	checks, _ = r.body["checks"].(map[string]any)
	db = entry("databaseStatus:responseTime")
	if r.code != 503 || r.body["status"] != "fail" || db["status"] != "fail" || db["output"] != "connection refused" {
		t.Errorf("failing check: %d %s", r.code, r.raw)
	}
	// q=0 refuses the format; a plain client gets the default.
	for _, accept := range []string{"application/health+json;q=0", "application/json", "*/*", ""} {
		r := healthDo(t, http.MethodGet, srv.URL+"/api/health", accept)
		if ct := r.hdr.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Accept %q: Content-Type %q, want application/json", accept, ct)
		}
	}
}

func TestHealthMethods(t *testing.T) {
	h := NewHealth(runningState(t), nil)
	h.AddCheck(Check{Name: "databaseStatus", Run: func(context.Context) error { return errors.New("down") }})
	srv := healthServer(t, h)
	get := healthGet(t, srv.URL+"/api/health")
	head := healthDo(t, http.MethodHead, srv.URL+"/api/health", "")
	if head.code != 503 || head.raw != "" {
		t.Errorf("HEAD: %d body %q, want 503 and no body", head.code, head.raw)
	}
	if head.hdr.Get("Content-Type") != "application/json" || head.hdr.Get("Cache-Control") != "no-store" {
		t.Errorf("HEAD headers %v", head.hdr)
	}
	if cl := head.hdr.Get("Content-Length"); cl == "" || cl == "0" {
		t.Errorf("HEAD Content-Length %q, want the GET body's length (%d)", cl, len(get.raw))
	}
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodOptions} {
		r := healthDo(t, m, srv.URL+"/livez", "")
		if r.code != http.StatusMethodNotAllowed || r.hdr.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s: %d Allow %q, want 405 with Allow: GET, HEAD", m, r.code, r.hdr.Get("Allow"))
		}
		if r.hdr.Get("X-Content-Type-Options") != "nosniff" || !strings.HasPrefix(r.hdr.Get("Content-Type"), "text/plain") {
			t.Errorf("%s: headers %v", m, r.hdr)
		}
	}
}

func TestHealthPublic(t *testing.T) {
	h := NewHealth(runningState(t), nil)
	h.AddCounter("activeAgents", func() int { return 1 })
	h.AddCheck(Check{Name: "databaseStatus", Run: func(context.Context) error { return errors.New("secret DSN in here") }})
	h.Public = func(r *http.Request) bool { return r.Header.Get("X-Trusted") == "yes" }
	srv := healthServer(t, h)
	r := healthGet(t, srv.URL+"/api/health")
	if r.code != 503 || r.raw != `{"status":"error"}` {
		t.Errorf("untrusted: %d %s, want 503 {\"status\":\"error\"}", r.code, r.raw)
	}
	if r := healthDo(t, http.MethodGet, srv.URL+"/api/health", "application/health+json"); r.raw != `{"status":"fail"}` {
		t.Errorf("untrusted health+json: %s", r.raw)
	}
	if r := healthGet(t, srv.URL+"/livez"); r.code != 200 || r.raw != `{"status":"ok"}` {
		t.Errorf("untrusted liveness: %d %s", r.code, r.raw)
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/health", nil)
	req.Header.Set("X-Trusted", "yes")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "secret DSN in here") || !strings.Contains(string(body), `"activeAgents":1`) {
		t.Errorf("trusted caller does not see details: %s", body)
	}
}

// TestHealthBurst sends 1,000 concurrent requests while the check is
// slow: the check runs once per cache period, and no goroutine remains.
func TestHealthBurst(t *testing.T) {
	checkNoGoroutineLeak(t)
	h := NewHealth(runningState(t), nil)
	h.CacheTTL = time.Hour
	var dbRuns, cacheRuns atomic.Int32
	slow := func(n *atomic.Int32) func(context.Context) error {
		return func(ctx context.Context) error {
			n.Add(1)
			select {
			case <-time.After(50 * time.Millisecond):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	h.AddCheck(Check{Name: "databaseStatus", Run: slow(&dbRuns), Pass: "connected"})
	h.AddCheck(Check{Name: "cache", Run: slow(&cacheRuns)})
	h.AddCounter("activeAgents", func() int { return 7 })

	burst := func() {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan string, 1000)
		for i := range 1000 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req := httptest.NewRequest(http.MethodGet, "/api/health", nil)
				if i%2 == 1 {
					req.Header.Set("Accept", "application/health+json")
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != 200 || !json.Valid(rec.Body.Bytes()) {
					errs <- fmt.Sprintf("%d %s", rec.Code, rec.Body)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Fatalf("a request of the burst failed: %s", e)
		}
	}
	burst()
	if d, c := dbRuns.Load(), cacheRuns.Load(); d != 1 || c != 1 {
		t.Fatalf("after a burst of 1,000 within one cache period: checks ran %d and %d times, want 1 each", d, c)
	}
	// A new cache period: age the cached results past CacheTTL (rather
	// than sleep an hour); the next burst runs each check once more.
	for _, c := range h.reg.Load().checks {
		r := *c.last.Load()
		r.at = r.at.Add(-2 * time.Hour)
		c.last.Store(&r)
	}
	burst()
	if d, c := dbRuns.Load(), cacheRuns.Load(); d != 2 || c != 2 {
		t.Fatalf("after a second burst in a new cache period: checks ran %d and %d times, want 2 each", d, c)
	}
}

// nonGCPauses returns how many stop-the-world pauses not caused by the
// garbage collector the runtime has counted.
func nonGCPauses(t *testing.T) uint64 {
	t.Helper()
	s := []metrics.Sample{{Name: "/sched/pauses/total/other:seconds"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindFloat64Histogram {
		t.Fatalf("%s is not supported by this runtime", s[0].Name)
	}
	var n uint64
	for _, c := range s[0].Value.Float64Histogram().Counts {
		n += c
	}
	return n
}

func TestHealthDoesNotStopTheWorld(t *testing.T) {
	h := NewHealth(runningState(t), nil)
	h.CacheTTL = time.Millisecond // refresh often, to include the refresh path
	h.AddCheck(Check{Name: "databaseStatus", Run: func(context.Context) error { return nil }})
	h.AddCounter("activeAgents", func() int { return 1 })
	reqs := []*http.Request{
		httptest.NewRequest(http.MethodGet, "/api/health", nil),
		httptest.NewRequest(http.MethodGet, "/api/health", nil),
		httptest.NewRequest(http.MethodHead, "/api/health", nil),
	}
	reqs[1].Header.Set("Accept", "application/health+json")
	live := h.Liveness()
	// Make the first request take a new memory sample too.
	m := *h.mem.Load()
	m.at = time.Time{}
	h.mem.Store(&m)

	before := nonGCPauses(t)
	for i := range 10000 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, reqs[i%len(reqs)])
		if i%10 == 0 {
			live.ServeHTTP(rec, reqs[0])
		}
		if rec.Code != 200 {
			t.Fatalf("request %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	after := nonGCPauses(t)
	if after != before {
		t.Errorf("non-GC stop-the-world pauses grew from %d to %d during 10,000 requests", before, after)
	}
	// The measure sees what the handler must avoid.
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if n := nonGCPauses(t); n == after {
		t.Errorf("runtime.ReadMemStats did not count as a non-GC pause (%d): the measure is blind", n)
	}
}

func TestHealthRegistrationPanics(t *testing.T) {
	ok := func(context.Context) error { return nil }
	for _, tc := range []struct {
		name string
		f    func(h *Health)
		want string
	}{
		{"empty check name", func(h *Health) { h.AddCheck(Check{Run: ok}) }, "empty name"},
		{"nil Run", func(h *Health) { h.AddCheck(Check{Name: "db"}) }, "nil Run"},
		{"duplicate check", func(h *Health) { h.AddCheck(Check{Name: "db", Run: ok}); h.AddCheck(Check{Name: "db", Run: ok}) }, "duplicate"},
		{"check named like a counter", func(h *Health) { h.AddCounter("db", func() int { return 0 }); h.AddCheck(Check{Name: "db", Run: ok}) }, "duplicate"},
		{"counter named like a check", func(h *Health) { h.AddCheck(Check{Name: "db", Run: ok}); h.AddCounter("db", func() int { return 0 }) }, "duplicate"},
		{"reserved check name", func(h *Health) { h.AddCheck(Check{Name: "uptime", Run: ok}) }, "reserved"},
		{"reserved counter name", func(h *Health) { h.AddCounter("status", func() int { return 0 }) }, "reserved"},
		{"empty counter name", func(h *Health) { h.AddCounter("", func() int { return 0 }) }, "empty name"},
		{"nil counter", func(h *Health) { h.AddCounter("n", nil) }, "nil func"},
		// Invalid UTF-8 would be encoded as U+FFFD: "a\xff", "a\xfe" and
		// "a\uFFFD" would give one JSON key three times.
		{"check name not UTF-8", func(h *Health) { h.AddCheck(Check{Name: "a\xff", Run: ok}) }, `name "a\xff" is not valid UTF-8`},
		{"counter name not UTF-8", func(h *Health) {
			h.AddCounter("a\uFFFD", func() int { return 0 }) // valid: U+FFFD itself
			h.AddCounter("a\xfe", func() int { return 0 })
		}, `name "a\xfe" is not valid UTF-8`},
		{"Optional and Critical", func(h *Health) { h.AddCheck(Check{Name: "db", Run: ok, Optional: true, Critical: true}) }, "both Optional"},
		{"counter named like a memory key", func(h *Health) { h.AddCounter("memory:rss", func() int { return 0 }) }, "collide"},
		{"counter named like a check's response time", func(h *Health) {
			h.AddCheck(Check{Name: "db", Run: ok})
			h.AddCounter("db:responseTime", func() int { return 0 })
		}, "second key"},
		{"check whose response time is a counter", func(h *Health) {
			h.AddCounter("db:responseTime", func() int { return 0 })
			h.AddCheck(Check{Name: "db", Run: ok})
		}, "second key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				v := recover()
				if s, _ := v.(string); !strings.Contains(s, tc.want) {
					t.Errorf("panic %#v, want one mentioning %q", v, tc.want)
				}
			}()
			tc.f(NewHealth(nil, nil))
		})
	}
}

func TestHealthAddCheckWhileServing(t *testing.T) {
	h := NewHealth(runningState(t), nil)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
				if !json.Valid(rec.Body.Bytes()) {
					t.Errorf("invalid JSON %s", rec.Body)
					return
				}
			}
		}
	}()
	for i := range 20 {
		h.AddCounter(fmt.Sprintf("c%d", i), func() int { return i })
		h.AddCheck(Check{Name: fmt.Sprintf("k%d", i), Run: func(context.Context) error { return nil }})
	}
	close(stop)
	wg.Wait()
	r := serveDirect(t, h, "")
	if r.body["c19"] != 19.0 || r.body["k19"] != "ok" {
		t.Errorf("late registrations missing: %s", r.raw)
	}
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{
		"", "plain", `quote " and \ backslash`, "tab\tnew\nline\rcr", "\x00\x01\x1f", "<script>&amp;</script>",
		"ünïcödé ✓ 🙂", "line\u2028sep\u2029", "bad \xff utf8 \xc3", "\x7f",
	} {
		got := appendJSONString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Errorf("%q: invalid JSON %s: %v", s, got, err)
			continue
		}
		want := strings.ToValidUTF8(s, "\uFFFD")
		if s == "bad \xff utf8 \xc3" {
			want = "bad \uFFFD utf8 \uFFFD"
		}
		if back != want {
			t.Errorf("%q: round trip gave %q", s, back)
		}
		if strings.ContainsAny(string(got), "<>&\u2028\u2029") {
			t.Errorf("%q: unescaped HTML-sensitive characters in %s", s, got)
		}
	}
}

func TestAppendTimestamp(t *testing.T) {
	loc := time.FixedZone("X", 5*3600+30*60)
	for _, tm := range []time.Time{
		time.Date(2025, 11, 27, 21, 0, 0, 0, time.UTC),
		time.Date(2025, 11, 28, 2, 30, 0, 999_999_999, loc),
		time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
	} {
		got := string(appendTimestamp(nil, tm))
		want := `"` + tm.UTC().Format(jsTime) + `"`
		if got != want {
			t.Errorf("%v: %s, want %s", tm, got, want)
		}
	}
}

func TestWantsHealthJSON(t *testing.T) {
	for accept, want := range map[string]bool{
		"application/health+json":                                 true,
		"APPLICATION/HEALTH+JSON":                                 true,
		"application/json, application/health+json;q=0.9":         false, // application/json is preferred
		"application/json;q=0.9, application/health+json":         true,
		"application/json, application/health+json":               true, // a tie: the type named
		"application/health+json, */*":                            true,
		"application/health+json;q=0.5, */*":                      false,
		"application/health+json;q=0.5, application/*;q=0.4, */*": true, // application/* is more specific than */*
		"application/json;q=1.0, application/health+json;q=0.001": false,
		"application/json;q=0, application/health+json;q=0.1":     true,
		"application/health+json;q=x":                             true, // an unreadable q counts as 1
		"application/health+json ; q=0.0":                         false,
		"application/health+json;q=0":                             false,
		"application/json":                                        false,
		"*/*":                                                     false,
		"":                                                        false,
		"application/health+jsonx":                                false,
	} {
		if got := wantsHealthJSON([]string{accept}); got != want {
			t.Errorf("%q: %v, want %v", accept, got, want)
		}
	}
	if !wantsHealthJSON([]string{"text/html", "application/health+json"}) {
		t.Error("a second Accept line was ignored")
	}
	if wantsHealthJSON([]string{"application/health+json;q=0.5", "application/json"}) {
		t.Error("application/json of a second Accept line was ignored")
	}
}

// The format follows the client's q-values, and every answer says it
// varies with Accept (a cache keeping one format for all would otherwise
// mix them), without dropping a Vary set before the handler.
func TestHealthVaryAndQValues(t *testing.T) {
	h := NewHealth(runningState(t), nil)
	srv := healthServer(t, h)
	for _, tc := range []struct{ accept, want string }{
		{"", "application/json"},
		{"application/health+json", "application/health+json"},
		{"application/json, application/health+json;q=0.1", "application/json"},
		{"application/json;q=0.5, application/health+json", "application/health+json"},
	} {
		for _, path := range []string{"/api/health", "/readyz", "/livez"} {
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				r := healthDo(t, method, srv.URL+path, tc.accept)
				if got := r.hdr.Get("Content-Type"); got != tc.want {
					t.Errorf("%s %s Accept %q: Content-Type %q, want %q", method, path, tc.accept, got, tc.want)
				}
				if got := r.hdr.Values("Vary"); !slices.Equal(got, []string{"Accept"}) {
					t.Errorf("%s %s: Vary %q, want Accept", method, path, got)
				}
			}
		}
	}
	for _, tc := range []struct {
		before []string // what a middleware set
		want   []string
	}{
		{[]string{"Accept-Encoding"}, []string{"Accept-Encoding", "Accept"}},
		{[]string{"Accept"}, []string{"Accept"}},                             // not twice
		{[]string{"Origin, accept"}, []string{"Origin, accept"}},             // in a list, any case
		{[]string{"*"}, []string{"*"}},                                       // varies with everything already
		{[]string{"Accept-Language"}, []string{"Accept-Language", "Accept"}}, // not a prefix match
	} {
		mw := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Vary"] = slices.Clone(tc.before)
			h.ServeHTTP(w, r)
		})
		mwSrv := httptest.NewServer(mw)
		t.Cleanup(mwSrv.Close)
		r := healthGet(t, mwSrv.URL)
		if got := r.hdr.Values("Vary"); !slices.Equal(got, tc.want) {
			t.Errorf("behind a middleware that set Vary %q: Vary %q, want %q", tc.before, got, tc.want)
		}
	}
}

func TestBuildVersion(t *testing.T) {
	bi := &debug.BuildInfo{Main: debug.Module{Path: "example.com/backend", Version: "v1.4.2"},
		Settings: []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "0123abcd"}}}
	if v, r := buildVersion(bi, true); v != "v1.4.2" || r != "0123abcd" {
		t.Errorf("buildVersion = %q %q", v, r)
	}
	bi.Main.Version, bi.Settings = "(devel)", nil
	if v, r := buildVersion(bi, true); v != "" || r != "" {
		t.Errorf("devel build: %q %q, want nothing", v, r)
	}
	if v, r := buildVersion(nil, false); v != "" || r != "" {
		t.Errorf("no build info: %q %q", v, r)
	}
}

// TestHealthDuringGracefulShutdown drives the lifecycle with a real
// GracefulShutdown and Locker: while a hook drains, readiness is 503 and
// liveness 200; once done, both are 503.
func TestHealthDuringGracefulShutdown(t *testing.T) {
	checkNoGoroutineLeak(t)
	lk, err := acquireWith(filepath.Join(t.TempDir(), "backend.pid"), watchEvery(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lk.Unlock() })
	gs := NewGracefulShutdown(lk)
	h := NewHealth(gs.State(), lk)
	srv := healthServer(t, h)
	if r := healthGet(t, srv.URL+"/readyz"); r.code != 503 || r.body["status"] != "starting" {
		t.Fatalf("before running: %d %s", r.code, r.raw)
	}
	if err := gs.State().Set(StatusRunning); err != nil {
		t.Fatal(err)
	}
	if r := healthGet(t, srv.URL+"/readyz"); r.code != 200 || r.body["instanceId"] != lk.InstanceID() {
		t.Fatalf("running: %d %s", r.code, r.raw)
	}
	draining, release := make(chan struct{}), make(chan struct{})
	gs.Add("drain", func(ctx context.Context) error {
		close(draining)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	})
	done := make(chan error, 1)
	go func() { done <- gs.Shutdown(nil) }()
	<-draining
	if r := healthGet(t, srv.URL+"/readyz"); r.code != 503 || r.body["status"] != "stopping" {
		t.Errorf("draining, readiness: %d %s, want 503 stopping", r.code, r.raw)
	}
	if r := healthGet(t, srv.URL+"/livez"); r.code != 200 || r.body["status"] != "stopping" {
		t.Errorf("draining, liveness: %d %s, want 200 stopping", r.code, r.raw)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/readyz", "/livez"} {
		if r := healthGet(t, srv.URL+path); r.code != 503 || r.body["status"] != "stopped" {
			t.Errorf("stopped, %s: %d %s, want 503 stopped", path, r.code, r.raw)
		}
	}
}
