// Package prom exports the state of an instancelock instance to Prometheus:
// whether it holds its locks, how often it lost them, its lifecycle, its
// health checks and its shutdown hooks.
//
//	c := prom.New(prom.WithLock("pidfile", locker), prom.WithShutdown(g), prom.WithHealth(health))
//	prometheus.MustRegister(c)
//	mux.Handle("GET /metrics", promhttp.Handler())
//
// A Collector reads everything when it is scraped: it starts no goroutine
// and runs no health check (it reports the results of the last probe).
//
// The metrics, all prefixed instancelock_:
//
//	info{instance_id}                          gauge   1; the instance id of the State (or of the first lock)
//	start_time_seconds                         gauge   when the State was created, in Unix seconds
//	state{state}                               gauge   1 for the current lifecycle step (starting, running, stopping, stopped), 0 for the others
//	lock_held{lock}                            gauge   1 while the lock is held (Err() is nil), else 0
//	lock_losses_total{lock}                    counter holdings lost (Lost() closed) seen by this collector
//	lock_fencing_token{lock}                   gauge   the fencing token of the current holding; fleet locks (instancelock.Fencer) while held
//	lock_takeovers_total{lock}                 counter times this instance became the holder; fleet locks only
//	check_success{check,optional,critical}     gauge   1 if the check's last run passed, else 0
//	check_duration_seconds{check}              gauge   how long the check's last run took
//	check_last_run_timestamp_seconds{check}    gauge   when the check's last result was known, in Unix seconds
//	shutdown_hook_duration_seconds{hook}       gauge   how long the hook took (hooks that have run)
//	shutdown_hook_failures_total{hook}         counter hooks that returned an error, panicked or were abandoned
//
// A check appears once a probe has run it. Losses and takeovers are counted
// from what each scrape sees: a holding that begins and is lost between two
// scrapes is not seen. That is rare: the PID-file lock's loss makes a
// GracefulShutdown end the process, and a fleet lock is usually held for
// far longer than a scrape interval; a loss of a holding that a scrape saw
// is always counted, even if the lock was released or taken again since. The hook metrics are served as long as
// the host serves /metrics: an HTTP server stopped by the first hook takes
// them with it (see the example backend's README).
package prom

import (
	"strconv"
	"sync"
	"time"

	"github.com/ad5dec64/instancelock"
	"github.com/prometheus/client_golang/prometheus"
)

const namespace = "instancelock"

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
}

var (
	descInfo      = desc("info", "Information about the instance: its instance id; always 1.", "instance_id")
	descStartTime = desc("start_time_seconds", "Start time of the instance's lifecycle since the Unix epoch, in seconds.")
	descState     = desc("state", "Lifecycle step of the instance: 1 for the current one (starting, running, stopping, stopped), 0 for the others.", "state")

	descHeld      = desc("lock_held", "Whether the instance holds the lock (1) or not (0).", "lock")
	descLosses    = desc("lock_losses_total", "Holdings of the lock that were lost while held, as seen by this collector.", "lock")
	descToken     = desc("lock_fencing_token", "Fencing token of the current holding of a fleet lock; absent when not held.", "lock")
	descTakeovers = desc("lock_takeovers_total", "Times this instance became the holder of a fleet lock, as seen by this collector.", "lock")

	descCheckSuccess  = desc("check_success", "Whether the health check's last run passed (1) or failed (0).", "check", "optional", "critical")
	descCheckDuration = desc("check_duration_seconds", "Duration of the health check's last run, in seconds.", "check")
	descCheckTime     = desc("check_last_run_timestamp_seconds", "When the health check's last result was known, since the Unix epoch, in seconds.", "check")

	descHookDuration = desc("shutdown_hook_duration_seconds", "Duration of the shutdown hook, in seconds, once it has run.", "hook")
	descHookFailures = desc("shutdown_hook_failures_total", "Runs of the shutdown hook that failed: an error, a panic or abandoned at its deadline.", "hook")
)

var statuses = [...]instancelock.Status{
	instancelock.StatusStarting, instancelock.StatusRunning, instancelock.StatusStopping, instancelock.StatusStopped,
}

// Collector is a prometheus.Collector of one instance's locks, lifecycle,
// health checks and shutdown hooks. Create it with New; it is safe for
// concurrent use, and may be registered with several registries.
type Collector struct {
	locks  []*lockTrack
	state  *instancelock.State
	g      *instancelock.GracefulShutdown
	health *instancelock.Health
}

// An Option adds a source to a Collector.
type Option func(*Collector)

// lockTrack is one lock and what the scrapes have seen of it.
type lockTrack struct {
	name string
	get  func() instancelock.Mutex

	mu        sync.Mutex
	seen      <-chan struct{} // Lost() of the latest holding seen
	open      <-chan struct{} // the same while not yet seen closed, else nil
	losses    uint64
	takeovers uint64
}

// WithLock adds a lock (the PID-file *instancelock.Locker, a pglock or
// redislock Locker, any instancelock.Mutex) under the label lock="name".
// A lock that implements instancelock.Fencer gets the fleet metrics. New
// panics if name is empty or already used, or m is nil.
func WithLock(name string, m instancelock.Mutex) Option {
	if l, ok := m.(*instancelock.Locker); m == nil || ok && l == nil {
		panic("prom: WithLock(" + strconv.Quote(name) + "): nil Mutex")
	}
	return WithLockFunc(name, func() instancelock.Mutex { return m })
}

// WithLockFunc adds a lock that may not exist yet, or may be replaced: f is
// called at each scrape and returns the lock, or nil when there is none
// (the lock then counts as not held). Use it for a fleet lock opened in the
// background. f must be safe for concurrent use. New panics if name is
// empty or already used, or f is nil.
func WithLockFunc(name string, f func() instancelock.Mutex) Option {
	if f == nil {
		panic("prom: WithLockFunc(" + strconv.Quote(name) + "): nil func")
	}
	return func(c *Collector) {
		if name == "" {
			panic("prom: WithLock: empty lock name")
		}
		for _, l := range c.locks {
			if l.name == name {
				panic("prom: WithLock: duplicate lock name " + strconv.Quote(name))
			}
		}
		c.locks = append(c.locks, &lockTrack{name: name, get: f})
	}
}

// WithState adds the lifecycle State: the info, start time and state
// metrics.
func WithState(s *instancelock.State) Option { return func(c *Collector) { c.state = s } }

// WithShutdown adds a GracefulShutdown: its hooks' metrics, and its State
// unless WithState gives another.
func WithShutdown(g *instancelock.GracefulShutdown) Option {
	return func(c *Collector) { c.g = g }
}

// WithHealth adds a Health: the results of its checks.
func WithHealth(h *instancelock.Health) Option { return func(c *Collector) { c.health = h } }

// New returns a Collector of the sources the options add. It panics on the
// programmer errors the options describe.
func New(opts ...Option) *Collector {
	c := &Collector{}
	for _, o := range opts {
		o(c)
	}
	if c.state == nil && c.g != nil {
		c.state = c.g.State()
	}
	return c
}

// Describe sends the descriptions of every metric the Collector may send.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descInfo, descStartTime, descState, descHeld, descLosses, descToken, descTakeovers,
		descCheckSuccess, descCheckDuration, descCheckTime, descHookDuration, descHookFailures,
	} {
		ch <- d
	}
}

// Collect reads the current state of every source and sends it.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.collectState(ch)
	for _, l := range c.locks {
		l.collect(ch)
	}
	if c.health != nil {
		for _, r := range c.health.CheckResults() {
			if !r.Ran {
				continue
			}
			ch <- prometheus.MustNewConstMetric(descCheckSuccess, prometheus.GaugeValue, bool01(r.Err == nil),
				r.Name, strconv.FormatBool(r.Optional), strconv.FormatBool(r.Critical))
			ch <- prometheus.MustNewConstMetric(descCheckDuration, prometheus.GaugeValue, r.Duration.Seconds(), r.Name)
			ch <- prometheus.MustNewConstMetric(descCheckTime, prometheus.GaugeValue, unixSeconds(r.At), r.Name)
		}
	}
	if c.g != nil {
		c.collectHooks(ch)
	}
}

func (c *Collector) collectState(ch chan<- prometheus.Metric) {
	id := ""
	switch {
	case c.state != nil:
		id = c.state.InstanceID()
	case len(c.locks) > 0:
		if m := c.locks[0].get(); m != nil {
			id = m.InstanceID()
		}
	}
	if id != "" {
		ch <- prometheus.MustNewConstMetric(descInfo, prometheus.GaugeValue, 1, id)
	}
	if c.state == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(descStartTime, prometheus.GaugeValue, unixSeconds(c.state.StartedAt()))
	now := c.state.Status()
	for _, s := range statuses {
		ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, bool01(s == now), s.String())
	}
}

// collectHooks sends one duration and one failure count per hook name; the
// same name given to several hooks sums them.
func (c *Collector) collectHooks(ch chan<- prometheus.Metric) {
	results := c.g.HookResults()
	type sum struct {
		d        float64
		failures uint64
	}
	var order []string
	sums := map[string]*sum{}
	for _, r := range results {
		s := sums[r.Name]
		if s == nil {
			s = &sum{}
			sums[r.Name] = s
			order = append(order, r.Name)
		}
		s.d += r.Duration.Seconds()
		if r.Err != nil {
			s.failures++
		}
	}
	for _, name := range order {
		s := sums[name]
		ch <- prometheus.MustNewConstMetric(descHookDuration, prometheus.GaugeValue, s.d, name)
		ch <- prometheus.MustNewConstMetric(descHookFailures, prometheus.CounterValue, float64(s.failures), name)
	}
}

// collect observes the lock once and sends its metrics.
func (l *lockTrack) collect(ch chan<- prometheus.Metric) {
	m := l.get()
	held := false
	var fencer instancelock.Fencer
	l.mu.Lock()
	if l.open != nil && closed(l.open) {
		l.losses++
		l.open = nil
	}
	if m != nil {
		held = m.Err() == nil
		fencer, _ = m.(instancelock.Fencer)
		if lost := m.Lost(); lost != nil && lost != l.seen {
			// A holding not seen before.
			l.seen = lost
			l.takeovers++
			if closed(lost) {
				l.losses++
				l.open = nil
			} else {
				l.open = lost
			}
		}
	}
	losses, takeovers := l.losses, l.takeovers
	l.mu.Unlock()

	ch <- prometheus.MustNewConstMetric(descHeld, prometheus.GaugeValue, bool01(held), l.name)
	ch <- prometheus.MustNewConstMetric(descLosses, prometheus.CounterValue, float64(losses), l.name)
	if fencer == nil {
		return
	}
	if token, ok := fencer.FencingToken(); ok && held {
		ch <- prometheus.MustNewConstMetric(descToken, prometheus.GaugeValue, float64(token), l.name)
	}
	ch <- prometheus.MustNewConstMetric(descTakeovers, prometheus.CounterValue, float64(takeovers), l.name)
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// unixSeconds returns t in Unix seconds with sub-second precision.
func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
