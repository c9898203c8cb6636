package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// stubProbe answers a probe with a fixed status and body.
type stubProbe struct {
	code int
	body string
}

func (s stubProbe) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(s.code)
	io.WriteString(w, s.body)
}

type apiClient struct {
	t   *testing.T
	url string
}

// do sends a request and decodes a JSON response into out (if not nil).
func (c apiClient) do(method, path, body string, out any) *http.Response {
	c.t.Helper()
	req, err := http.NewRequest(method, c.url+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	if out != nil {
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			c.t.Fatalf("%s %s: Content-Type %q", method, path, ct)
		}
		if err := json.Unmarshal(b, out); err != nil {
			c.t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
	return resp
}

func newTestAPI(t *testing.T) (apiClient, *Orchestrator) {
	t.Helper()
	o, db := newTestOrchestrator(t)
	srv := httptest.NewServer(routes(NewAPI(o, db, nil, nil), probes{
		health: stubProbe{200, "health"}, ready: stubProbe{503, "ready"}, live: stubProbe{200, "live"},
	}))
	t.Cleanup(srv.Close)
	return apiClient{t, srv.URL}, o
}

func TestAPIAgents(t *testing.T) {
	c, o := newTestAPI(t)
	var list agentList
	if r := c.do("GET", "/api/agents", "", &list); r.StatusCode != 200 || len(list.Agents) != 0 || list.Total != 0 {
		t.Fatalf("GET /api/agents = %d %+v", r.StatusCode, list)
	}
	var a AgentInfo
	r := c.do("POST", "/api/agents", "", &a)
	if r.StatusCode != http.StatusCreated || a.ID != "agent-1" || a.Status != AgentRunning {
		t.Fatalf("POST /api/agents = %d %+v", r.StatusCode, a)
	}
	if loc := r.Header.Get("Location"); loc != "/api/agents/agent-1" {
		t.Errorf("Location = %q", loc)
	}
	if r := c.do("POST", "/api/agents", `{"name":"scribe"}`, &a); r.StatusCode != 201 || a.Name != "scribe" || a.ID != "agent-2" {
		t.Fatalf("POST with a name = %d %+v", r.StatusCode, a)
	}
	var e map[string]string
	if r := c.do("POST", "/api/agents", `{"name":`, &e); r.StatusCode != 400 || e["error"] == "" {
		t.Fatalf("POST with a broken body = %d %v", r.StatusCode, e)
	}
	if r := c.do("GET", "/api/agents", "", &list); r.StatusCode != 200 || list.Active != 2 || list.Total != 2 {
		t.Fatalf("GET /api/agents = %d %+v", r.StatusCode, list)
	}
	if r := c.do("GET", "/api/agents/agent-2", "", &a); r.StatusCode != 200 || a.Name != "scribe" {
		t.Fatalf("GET /api/agents/agent-2 = %d %+v", r.StatusCode, a)
	}
	if r := c.do("DELETE", "/api/agents/agent-1", "", &a); r.StatusCode != 200 || a.Status != AgentStopped {
		t.Fatalf("DELETE /api/agents/agent-1 = %d %+v", r.StatusCode, a)
	}
	if r := c.do("GET", "/api/agents", "", &list); list.Active != 1 || list.Total != 2 || list.Agents[0].Status != AgentStopped {
		t.Fatalf("GET /api/agents after DELETE = %d %+v", r.StatusCode, list)
	}
	for _, p := range []string{"DELETE /api/agents/nope", "GET /api/agents/nope"} {
		method, path, _ := strings.Cut(p, " ")
		if r := c.do(method, path, "", &e); r.StatusCode != 404 || e["error"] == "" {
			t.Errorf("%s = %d %v; want 404", p, r.StatusCode, e)
		}
	}
	if r := c.do("PUT", "/api/agents", "", nil); r.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("PUT /api/agents = %d; want 405", r.StatusCode)
	}
	// While shutting down, no new agents.
	if err := o.StopAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := c.do("POST", "/api/agents", "", &e); r.StatusCode != 503 {
		t.Fatalf("POST while stopping = %d %v; want 503", r.StatusCode, e)
	}
}

func TestAPIMessages(t *testing.T) {
	c, o := newTestAPI(t)
	if _, err := o.Start(""); err != nil {
		t.Fatal(err)
	}
	var st messageStats
	waitFor(t, 10*time.Second, "3 rows", func() bool {
		c.do("GET", "/api/messages?limit=2", "", &st)
		return st.Total >= 3
	})
	if len(st.Recent) != 2 || st.Recent[0].ID <= st.Recent[1].ID || st.Recent[0].AgentID != "agent-1" {
		t.Fatalf("recent = %+v; want the last 2 rows, newest first", st.Recent)
	}
	if len(st.Writers) != 1 || st.Writers[0].PID != 4242 || st.Writers[0].Rows > st.Total {
		t.Fatalf("writers = %+v", st.Writers)
	}
	var e map[string]string
	for _, q := range []string{"x", "-1", "1001"} {
		if r := c.do("GET", "/api/messages?limit="+q, "", &e); r.StatusCode != 400 {
			t.Errorf("limit=%s: %d; want 400", q, r.StatusCode)
		}
	}
	// A closed database is reported, not hidden.
	o.StopAll(context.Background())
	o.db.Close(context.Background())
	if r := c.do("GET", "/api/messages", "", &e); r.StatusCode != 503 || !strings.Contains(e["error"], "database") {
		t.Fatalf("GET /api/messages on a closed database = %d %v", r.StatusCode, e)
	}
}

func TestAPIProbesAreMounted(t *testing.T) {
	c, _ := newTestAPI(t)
	for path, want := range map[string]struct {
		code int
		body string
	}{"/api/health": {200, "health"}, "/readyz": {503, "ready"}, "/livez": {200, "live"}} {
		req, _ := http.NewRequest("GET", c.url+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want.code || string(b) != want.body {
			t.Errorf("GET %s = %d %q; want %d %q", path, resp.StatusCode, b, want.code, want.body)
		}
	}
}

func TestAPIFleet(t *testing.T) {
	// Without -lock: 404 saying so.
	c, _ := newTestAPI(t)
	var e map[string]string
	if r := c.do("GET", "/api/fleet", "", &e); r.StatusCode != 404 || !strings.Contains(e["error"], "-lock") {
		t.Fatalf("GET /api/fleet without a fleet lock = %d %v", r.StatusCode, e)
	}

	// With a fleet lock: a standby refuses new agents, and says who leads.
	o, db := newTestOrchestrator(t)
	lk := newFakeLock()
	fleet := NewFleet(lockSpec{desc: `fake lock "orchestrator"`, open: func() (fleetLock, error) { return lk, nil }}, o, 1, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fleet.Start(ctx)
	srv := httptest.NewServer(routes(NewAPI(o, db, fleet, nil), probes{stubProbe{200, "h"}, stubProbe{200, "r"}, stubProbe{200, "l"}}))
	defer srv.Close()
	c = apiClient{t, srv.URL}
	if r := c.do("POST", "/api/agents", "", &e); r.StatusCode != 503 || !strings.Contains(e["error"], "standby") {
		t.Fatalf("POST /api/agents on a standby = %d %v; want 503", r.StatusCode, e)
	}
	var st fleetStatus
	if r := c.do("GET", "/api/fleet", "", &st); r.StatusCode != 200 || st.Active || st.Holder != nil || st.Lock != `fake lock "orchestrator"` {
		t.Fatalf("GET /api/fleet on a standby = %d %+v", r.StatusCode, st)
	}
	lk.grants <- 12
	waitFor(t, 10*time.Second, "promotion", func() bool { return fleet.Active() == 1 })
	if r := c.do("GET", "/api/fleet", "", &st); r.StatusCode != 200 || !st.Active || st.FenceToken != 12 || st.Holder == nil || st.Holder.Port != 3000 {
		t.Fatalf("GET /api/fleet on the holder = %d %+v", r.StatusCode, st)
	}
	var a AgentInfo
	if r := c.do("POST", "/api/agents", "", &a); r.StatusCode != 201 || a.Fence != 12 {
		t.Fatalf("POST /api/agents on the holder = %d %+v", r.StatusCode, a)
	}
	cancel()
	o.StopAll(context.Background())
	if err := fleet.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
}
