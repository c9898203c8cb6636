package prom

import (
	"context"
	"testing"

	"github.com/ad5dec64/instancelock"
	"github.com/ad5dec64/instancelock/instancelocktest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// benchGather gathers a registry holding only c, b.N times.
func benchGather(b *testing.B, c prometheus.Collector) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGather is one scrape of the example backend's collector: a
// PID-file lock, a fleet lock, the lifecycle, two checks and four hooks
// that have run.
func BenchmarkGather(b *testing.B) {
	lk, err := instancelock.Acquire(b.TempDir() + "/app.pid")
	if err != nil {
		b.Fatal(err)
	}
	defer lk.Unlock()
	g := instancelock.NewGracefulShutdown(nil)
	for _, n := range []string{"close database", "release fleet lock", "stop agents", "http server"} {
		g.Add(n, func(context.Context) error { return nil })
	}
	g.Shutdown(nil)
	h := instancelock.NewHealth(g.State(), lk)
	h.AddCheck(instancelock.Check{Name: "databaseStatus", Run: func(context.Context) error { return nil }})
	h.AddCheck(instancelock.Check{Name: "databaseFile", Critical: true, Run: func(context.Context) error { return nil }})
	probe(b, h)
	fl := instancelocktest.NewMutex()
	if err := fl.TryLock(); err != nil {
		b.Fatal(err)
	}
	benchGather(b, New(WithLock("pidfile", lk), WithLock("fleet", fl), WithShutdown(g), WithHealth(h)))
}

// BenchmarkGatherGoCollector is the same scrape of the standard Go runtime
// collector, for scale.
func BenchmarkGatherGoCollector(b *testing.B) {
	benchGather(b, collectors.NewGoCollector())
}
