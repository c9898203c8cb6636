package bench

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock"
	alex "github.com/alexliesenfeld/health"
	hellofresh "github.com/hellofresh/health-go/v5"
)

// healthBenchWriter is a minimal http.ResponseWriter: it keeps the header
// map between requests and counts the body, so that a benchmark measures
// the handler, not the recorder.
type healthBenchWriter struct {
	hdr  http.Header
	code int
	n    int
}

func (w *healthBenchWriter) Header() http.Header         { return w.hdr }
func (w *healthBenchWriter) WriteHeader(code int)        { w.code = code }
func (w *healthBenchWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }

// healthBenchCheck is the one passing check every handler runs: a
// database ping that succeeds at once.
func healthBenchCheck(context.Context) error { return nil }

// healthHandlers builds the handlers compared, each with the same passing
// check; stop releases what they started.
func healthHandlers(tb testing.TB) (names []string, handlers map[string]http.Handler) {
	var active, total atomic.Int64
	active.Store(2)
	total.Store(5)

	ours := func(ttl time.Duration) http.Handler {
		st := instancelock.NewState("")
		if err := st.Set(instancelock.StatusRunning); err != nil {
			tb.Fatal(err)
		}
		h := instancelock.NewHealth(st, nil)
		h.CacheTTL = ttl
		h.AddCounter("activeAgents", func() int { return int(active.Load()) })
		h.AddCounter("totalAgents", func() int { return int(total.Load()) })
		h.AddCheck(instancelock.Check{Name: "databaseStatus", Run: healthBenchCheck, Pass: "connected", Fail: "disconnected"})
		return h
	}
	alexHandler := func(opts ...alex.CheckerOption) http.Handler {
		opts = append(opts, alex.WithCheck(alex.Check{Name: "database", Check: healthBenchCheck}))
		c := alex.NewChecker(opts...)
		tb.Cleanup(c.Stop)
		return alex.NewHandler(c)
	}
	hf, err := hellofresh.New(
		hellofresh.WithComponent(hellofresh.Component{Name: "backend", Version: "v1"}),
		hellofresh.WithChecks(hellofresh.Config{Name: "database", Timeout: 2 * time.Second, Check: healthBenchCheck}),
	)
	if err != nil {
		tb.Fatal(err)
	}
	handlers = map[string]http.Handler{
		"instancelock":           ours(0), // the default CacheTTL, 1s
		"alexliesenfeld-cache":   alexHandler(alex.WithCacheDuration(time.Second)),
		"alexliesenfeld-nocache": alexHandler(alex.WithDisabledCache()),
		"hellofresh":             hf.Handler(),
		"instancelock-cache1ns":  ours(time.Nanosecond), // every request runs the check
	}
	names = []string{"instancelock", "alexliesenfeld-cache", "alexliesenfeld-nocache", "hellofresh", "instancelock-cache1ns"}
	return names, handlers
}

// TestHealthHandlersAgree makes sure every benchmarked handler answers 200
// with a body for the request the benchmark sends.
func TestHealthHandlersAgree(t *testing.T) {
	names, handlers := healthHandlers(t)
	for _, name := range names {
		rec := httptest.NewRecorder()
		handlers[name].ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/health", nil))
		if rec.Code != http.StatusOK || rec.Body.Len() == 0 {
			t.Errorf("%s: %d %q", name, rec.Code, rec.Body)
		}
		t.Logf("%s: %s", name, rec.Body)
	}
}

// BenchmarkHealth: one GET with one passing check (and, for instancelock,
// two counters, the memory usage and the instance metadata), ServeHTTP
// called directly with a reused request and a minimal ResponseWriter.
//
//	cd bench && go test -run '^$' -bench '^BenchmarkHealth$' -benchmem -count 5
func BenchmarkHealth(b *testing.B) {
	names, handlers := healthHandlers(b)
	for _, name := range names {
		h := handlers[name]
		b.Run(name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, "/api/health", nil)
			w := &healthBenchWriter{hdr: http.Header{}}
			h.ServeHTTP(w, req) // first run of the check, outside the loop
			if w.code != http.StatusOK {
				b.Fatalf("%s answered %d", name, w.code)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				w.n = 0
				h.ServeHTTP(w, req)
			}
			if w.code != http.StatusOK || w.n == 0 {
				b.Fatalf("%s answered %d with %d bytes", name, w.code, w.n)
			}
		})
	}
}
