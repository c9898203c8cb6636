package instancelock_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/ad5dec64/instancelock"
)

// healthExampleGet sends GET path to mux and prints the code and some fields.
func healthExampleGet(mux http.Handler, path string, fields ...string) {
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(path, " ", rec.Code)
	for _, f := range fields {
		fmt.Printf(" %s=%v", f, body[f])
	}
	fmt.Println()
}

// The spec's endpoint: instance metadata, the host's counters and a
// database check, mounted by the host in its own mux.
func ExampleNewHealth() {
	state := instancelock.NewState("")
	h := instancelock.NewHealth(state, nil) // pass the Locker too, to report a lost lock
	h.AddCounter("activeAgents", func() int { return 2 })
	h.AddCounter("totalAgents", func() int { return 5 })
	dbUp := true
	h.AddCheck(instancelock.Check{
		Name:    "databaseStatus",
		Timeout: time.Second,
		Pass:    "connected",
		Fail:    "disconnected",
		Run: func(ctx context.Context) error { // db.PingContext in a real backend
			if !dbUp {
				return errors.New("connection refused")
			}
			return nil
		},
	})
	mux := http.NewServeMux()
	mux.Handle("GET /api/health", h)

	healthExampleGet(mux, "/api/health", "status")
	_ = state.Set(instancelock.StatusRunning)
	healthExampleGet(mux, "/api/health", "status", "activeAgents", "totalAgents", "databaseStatus")
	// Output:
	// /api/health 503 status=starting
	// /api/health 200 status=ok activeAgents=2 totalAgents=5 databaseStatus=connected
}

// Kubernetes probes: liveness stays 200 while the instance drains, readiness
// turns 503 as soon as shutdown begins.
func ExampleHealth_Liveness() {
	state := instancelock.NewState("")
	_ = state.Set(instancelock.StatusRunning)
	h := instancelock.NewHealth(state, nil)
	mux := http.NewServeMux()
	mux.Handle("GET /livez", h.Liveness())
	mux.Handle("GET /readyz", h.Readiness())

	_ = state.Set(instancelock.StatusStopping) // GracefulShutdown does this first
	healthExampleGet(mux, "/livez", "status")
	healthExampleGet(mux, "/readyz", "status")
	_ = state.Set(instancelock.StatusStopped)
	healthExampleGet(mux, "/livez", "status")
	// Output:
	// /livez 200 status=stopping
	// /readyz 503 status=stopping
	// /livez 503 status=stopped
}

// Callers the host does not trust see only the status.
func ExampleHealth_public() {
	state := instancelock.NewState("")
	_ = state.Set(instancelock.StatusRunning)
	h := instancelock.NewHealth(state, nil)
	h.AddCheck(instancelock.Check{Name: "databaseStatus", Run: func(context.Context) error {
		return errors.New("dial postgres://app@10.0.0.5: refused") // not for strangers
	}})
	h.Public = func(r *http.Request) bool { return r.Header.Get("Authorization") == "Bearer ops-token" }

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/health", nil))
	fmt.Println(rec.Code, rec.Body)
	// Output:
	// 503 {"status":"error"}
}

// A client asking for application/health+json gets the IETF draft format.
func ExampleHealth_healthJSON() {
	state := instancelock.NewState("")
	_ = state.Set(instancelock.StatusRunning)
	h := instancelock.NewHealth(state, nil)
	h.AddCheck(instancelock.Check{Name: "cache", Optional: true, Run: func(context.Context) error {
		return errors.New("redis: connection pool timeout")
	}})

	req := httptest.NewRequest(http.MethodGet, "/api/health", nil)
	req.Header.Set("Accept", "application/health+json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var body struct {
		Status string
		Checks map[string][]struct{ Status, Output string }
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &body)
	fmt.Println(rec.Code, rec.Header().Get("Content-Type"), body.Status)
	fmt.Println(body.Checks["cache:responseTime"][0].Status, body.Checks["cache:responseTime"][0].Output)
	// Output:
	// 200 application/health+json warn
	// warn redis: connection pool timeout
}
