package main

import (
	"net/http"

	"github.com/ad5dec64/instancelock"
	"github.com/ad5dec64/instancelock/prom"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricsHandler returns the GET /metrics handler: the instance's
// collector (package prom: the PID-file lock as lock="pidfile", with -lock
// the fleet lock as lock="fleet", the lifecycle, the health checks and the
// shutdown hooks) plus the Go runtime and process collectors, in a registry
// of its own. fleet may be nil.
func metricsHandler(g *instancelock.GracefulShutdown, lk *instancelock.Locker, health *instancelock.Health, fleet *Fleet) http.Handler {
	opts := []prom.Option{prom.WithLock("pidfile", lk), prom.WithShutdown(g), prom.WithHealth(health)}
	if fleet != nil {
		opts = append(opts, prom.WithLockFunc("fleet", fleet.lock))
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		prom.New(opts...),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// withMetrics serves GET /metrics with metrics and everything else with h.
func withMetrics(h, metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	mux.Handle("/", h)
	return mux
}

// lock returns the fleet lock once opened, nil before: what the metrics
// report as lock="fleet".
func (f *Fleet) lock() instancelock.Mutex {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lk == nil {
		return nil
	}
	return f.lk
}
