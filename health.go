package instancelock

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Defaults of Health and Check.
const (
	DefaultCacheTTL     = time.Second     // Health.CacheTTL when 0
	DefaultCheckTimeout = 2 * time.Second // Check.Timeout when 0
)

// memorySampleInterval is how long one sample of memoryUsage (runtime/metrics
// and the resident set size) is reused. Reading the heap statistics costs
// about as much as the rest of a response, and RSS costs system calls.
const memorySampleInterval = time.Second

// Content types of the two response formats.
const (
	healthContentType     = "application/json"
	healthJSONContentType = "application/health+json" // the IETF draft format
)

// Health is the health http.Handler of an instance: it answers with the
// instance's metadata (pid, uptime, start time, memory), the host's counters
// and the results of the host's checks, and turns the lifecycle (State), the
// lock (Locker) and the checks into a status and an HTTP status code. It
// registers nothing itself: the host mounts it in its own mux, for example
//
//	h := instancelock.NewHealth(state, locker)
//	h.AddCheck(instancelock.Check{Name: "databaseStatus", Run: db.PingContext, Pass: "connected", Fail: "disconnected"})
//	mux.Handle("GET /api/health", h)          // readiness, the spec's endpoint
//	mux.Handle("GET /livez", h.Liveness())     // Kubernetes liveness
//	mux.Handle("GET /readyz", h.Readiness())   // Kubernetes readiness
//
// The default answer is application/json:
//
//	{"status":"ok","pid":12345,"uptime":3600,
//	 "memoryUsage":{"heapUsed":45000000,"heapTotal":80000000,"external":2000000,"rss":120000000},
//	 "activeAgents":2,"totalAgents":5,"databaseStatus":"connected",
//	 "startedAt":"2025-11-27T20:00:00.000Z","timestamp":"2025-11-27T21:00:00.000Z"}
//
// followed, when known, by "instanceId", "version" (the main module's
// version) and "revision" (the VCS revision) from debug.ReadBuildInfo, and,
// when something fails, by "details": an object from check name (and
// "lock") to error text. uptime is in whole seconds; rss is omitted where
// the platform has no cheap way to read it (only Linux and Windows have
// one). memoryUsage comes from runtime/metrics, never from
// runtime.ReadMemStats (which stops the world), and is sampled at most once
// a second.
//
// A client sending Accept: application/health+json gets the IETF draft
// "Health Check Response Format for HTTP APIs" instead (status pass, warn
// or fail; checks keyed "component:measurement", uptime as a system check).
//
// Status and code, for readiness (ServeHTTP, Readiness):
//
//	lifecycle starting, stopping, stopped → 503, status "starting", "stopping", "stopped"
//	the Locker's Err() is not nil (lock lost or not held) → 503, "error"
//	a failing check (not Optional) → 503, "error"
//	a failing Optional check → 200, "degraded"
//	otherwise → 200, "ok"
//
// Checks are not run while stopping or stopped (their fields are then
// absent), so draining never touches the host's dependencies.
//
// GET and HEAD are served (HEAD with headers only); other methods get 405
// with an Allow header. Every answer carries Cache-Control: no-store and
// X-Content-Type-Options: nosniff.
//
// Create it with NewHealth; set CacheTTL and Public and register checks and
// counters before serving. A Health is safe for concurrent use.
type Health struct {
	// CacheTTL is how long a check's result is reused; 0 means
	// DefaultCacheTTL (1s). A burst of probes within that time runs each
	// check at most once.
	CacheTTL time.Duration
	// Public tells whether the caller may see details. nil: every caller
	// does. When it returns false the body is only {"status":"..."}; the
	// status code is the same.
	Public func(*http.Request) bool

	state     *State
	lk        Mutex
	pid       int
	startedAt time.Time
	fixed     []byte // `,"startedAt":"…"` rendered once
	tail      []byte // instanceId, version, revision rendered once
	hjTail    []byte // serviceId, version, releaseId for health+json

	mu    sync.Mutex      // serialises AddCheck and AddCounter
	names map[string]bool // fields of the spec format taken by checks and counters, under mu
	keys  map[string]bool // keys of "checks" in application/health+json taken by them, under mu
	reg   atomic.Pointer[healthRegistry]

	mem       atomic.Pointer[memorySample]
	memBusy   atomic.Bool // one request at a time refreshes mem
	memReader []metrics.Sample
}

// Check is a host check: a dependency the instance needs, such as its
// database.
type Check struct {
	// Name is the field of the check's word in the default format (for
	// example "databaseStatus") and the component name in
	// application/health+json ("databaseStatus:responseTime").
	Name string
	// Run performs the check; a nil error means passing. It runs in its
	// own goroutine under a context that ends after Timeout, and must be
	// safe to call again after it returned.
	Run func(ctx context.Context) error
	// Timeout bounds one run; 0 means DefaultCheckTimeout (2s).
	Timeout time.Duration
	// Optional makes a failure report "degraded" with 200 instead of
	// "error" with 503.
	Optional bool
	// Critical makes a failure fail liveness too: Liveness answers 503 and
	// the systemd watchdog of a GracefulShutdown on the same State stops
	// pinging, so the supervisor restarts the instance. Mark only what a
	// restart fixes (a wedged worker), not a dependency an outage takes
	// down, or an outage becomes a restart loop.
	Critical bool
	// Pass is the word reported when passing; "" means "ok" (a database:
	// "connected").
	Pass string
	// Fail is the word reported when failing; "" means "error" (a
	// database: "disconnected").
	Fail string
}

// NewHealth returns the health handler of the instance whose lifecycle is
// state and whose lock is lk (a *Locker or any other Mutex). state may be
// nil: the lifecycle then counts as running and startedAt is the process's
// start time. lk may be nil: the lock is then not checked. The pid is
// os.Getpid().
func NewHealth(state *State, lk Mutex) *Health {
	lk = nilMutex(lk)
	h := &Health{state: state, lk: lk, pid: os.Getpid()}
	id := ""
	switch {
	case state != nil:
		h.startedAt, id = state.StartedAt(), state.InstanceID()
	default:
		if _, at, err := processStart(h.pid); err == nil && !at.IsZero() {
			h.startedAt = at
		} else {
			h.startedAt = time.Now()
		}
		if lk != nil {
			id = lk.InstanceID()
		}
	}
	h.fixed = appendTimestamp(append(h.fixed, `,"startedAt":`...), h.startedAt)
	version, revision := buildVersion(debug.ReadBuildInfo())
	for _, f := range []struct{ key, hjKey, v string }{
		{"instanceId", "serviceId", id}, {"version", "version", version}, {"revision", "releaseId", revision},
	} {
		if f.v != "" {
			h.tail = appendJSONString(append(appendJSONString(append(h.tail, ','), f.key), ':'), f.v)
			h.hjTail = appendJSONString(append(appendJSONString(append(h.hjTail, ','), f.hjKey), ':'), f.v)
		}
	}
	h.reg.Store(&healthRegistry{})
	if state != nil {
		state.addHealth(h)
	}
	h.memReader = make([]metrics.Sample, len(memoryMetrics))
	for i, name := range memoryMetrics {
		h.memReader[i].Name = name
	}
	h.mem.Store(h.sampleMemory(time.Now()))
	return h
}

// buildVersion returns the main module's version and the VCS revision
// recorded in the binary, or "" for what is unknown.
func buildVersion(bi *debug.BuildInfo, ok bool) (version, revision string) {
	if !ok || bi == nil {
		return "", ""
	}
	if v := bi.Main.Version; v != "(devel)" {
		version = v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			revision = s.Value
		}
	}
	return version, revision
}

// reservedHealthNames are fields of the response that a check or counter
// may not take.
var reservedHealthNames = map[string]bool{
	"status": true, "pid": true, "uptime": true, "memoryUsage": true, "startedAt": true, "timestamp": true,
	"instanceId": true, "version": true, "revision": true, "details": true, "lock": true,
}

// AddCheck registers a check. It panics — a programmer error — when Name is
// empty, reserved (a field of the response: status, pid, uptime,
// memoryUsage, startedAt, timestamp, instanceId, version, revision,
// details, lock) or already taken by a check or counter, when the key it
// reports in application/health+json ("Name:responseTime") is taken by a
// counter, or when Run is nil. Register checks before serving; a check added later is used from
// the next request on.
func (h *Health) AddCheck(c Check) {
	if c.Run == nil {
		panic("instancelock: Health.AddCheck: nil Run for check " + strconv.Quote(c.Name))
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultCheckTimeout
	}
	if c.Pass == "" {
		c.Pass = "ok"
	}
	if c.Fail == "" {
		c.Fail = "error"
	}
	hc := &healthCheck{Check: c}
	hc.key = append(appendJSONString([]byte{','}, c.Name), ':')
	hc.passJSON = appendJSONString(nil, c.Pass)
	hc.failJSON = appendJSONString(nil, c.Fail)
	hc.hjKey = append(appendJSONString([]byte{','}, c.Name+":responseTime"), `:[{"componentType":"component","observedValue":`...)
	h.register("AddCheck", c.Name, c.Name+":responseTime", func(r *healthRegistry) {
		r.checks = append(r.checks, hc)
		r.critical = r.critical || c.Critical
	})
}

// AddCounter registers a counter reported as the field name, for example
// "activeAgents". f is called on every request with details, from many
// goroutines at once: it must be cheap and safe for concurrent use. It
// panics — a programmer error — when name is empty, reserved (see
// AddCheck), already taken by a check or counter, or a key that
// application/health+json reports itself ("uptime", "memory:rss",
// "memory:heapUsed", "memory:heapTotal", "memory:external") or for a check
// ("X:responseTime" for a check X), or when f is nil. Registration costs
// the same whatever the number already registered.
func (h *Health) AddCounter(name string, f func() int) {
	if f == nil {
		panic("instancelock: Health.AddCounter: nil func for counter " + strconv.Quote(name))
	}
	hc := healthCounter{f: f}
	hc.key = append(appendJSONString([]byte{','}, name), ':')
	hc.hjKey = append(appendJSONString([]byte{','}, name), `:[{"componentType":"system","observedValue":`...)
	h.register("AddCounter", name, name, func(r *healthRegistry) { r.counters = append(r.counters, hc) })
}

// systemHealthKeys are the keys of "checks" in application/health+json
// that the handler itself reports.
var systemHealthKeys = map[string]bool{
	"uptime": true, "memory:heapUsed": true, "memory:heapTotal": true, "memory:external": true, "memory:rss": true,
}

// register publishes a new registry changed by add, so that requests read
// it with one atomic load and without a lock. name is the field the entry
// takes in the spec format, key the one it takes in the "checks" object of
// application/health+json; both must be free, so that neither format ever
// holds a duplicate key.
//
// The new registry shares the old one's backing arrays: add only appends,
// and a request reads no further than the length of the registry it
// loaded, so registering n entries costs O(n) in all, not O(n²).
func (h *Health) register(op, name, key string, add func(*healthRegistry)) {
	if name == "" {
		panic("instancelock: Health." + op + ": empty name")
	}
	if reservedHealthNames[name] {
		panic("instancelock: Health." + op + ": " + strconv.Quote(name) + " is a reserved field of the response")
	}
	if systemHealthKeys[key] {
		panic("instancelock: Health." + op + ": " + strconv.Quote(name) + " would collide with the key " +
			strconv.Quote(key) + " that application/health+json reports")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.names[name] {
		panic("instancelock: Health." + op + ": duplicate name " + strconv.Quote(name))
	}
	if h.keys[key] {
		panic("instancelock: Health." + op + ": " + strconv.Quote(name) + " would give application/health+json a second key " +
			strconv.Quote(key) + " (a check named X reports X:responseTime; a counter reports its name)")
	}
	if h.names == nil {
		h.names, h.keys = map[string]bool{}, map[string]bool{}
	}
	h.names[name], h.keys[key] = true, true
	old := h.reg.Load()
	r := &healthRegistry{checks: old.checks, counters: old.counters, critical: old.critical}
	add(r)
	h.reg.Store(r)
}

// Readiness returns h itself: the readiness handler, with the rules of
// Health (Kubernetes /readyz semantics).
func (h *Health) Readiness() http.Handler { return h }

// Liveness returns the liveness handler (Kubernetes /livez semantics): 200
// while the process can serve, including while starting and while stopping
// (draining), and 503 once the lifecycle is stopped or while a Critical
// check fails (starting or running). It runs only the Critical checks (cached for CacheTTL like
// the others) and ignores the lock; the body is that of Health without the
// checks, with status "ok" when running and the lifecycle word otherwise
// ("error" when a Critical check fails while running). The same rule
// decides the systemd watchdog pings of a GracefulShutdown whose State
// this Health was built on.
func (h *Health) Liveness() http.Handler { return healthLiveness{h} }

type healthLiveness struct{ h *Health }

func (l healthLiveness) ServeHTTP(w http.ResponseWriter, r *http.Request) { l.h.serve(w, r, false) }

// ServeHTTP answers with readiness semantics: the spec's /api/health (see
// Health for the format, the status words and the codes). Expired check
// results are refreshed first: the request waits for the refresh, at most
// the longest Timeout of the checks, and concurrent requests share one
// refresh. If the request's context ends first, the checks still running
// are reported failed in this answer (they keep running for the next one).
func (h *Health) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.serve(w, r, true) }

// healthRegistry is the immutable set of checks and counters; AddCheck and
// AddCounter replace it.
type healthRegistry struct {
	checks   []*healthCheck
	counters []healthCounter
	critical bool // a check is Critical
}

type healthCounter struct {
	key   []byte // `,"name":`
	hjKey []byte // `,"name":[{…,"observedValue":`
	f     func() int
}

// healthScratch is what one request needs, pooled so that a request
// allocates nothing.
type healthScratch struct {
	buf     []byte
	results []*checkResult
	flights []*checkFlight
	rep     healthReport
}

// healthReport is what one answer says, decided before it is encoded.
type healthReport struct {
	reg     *healthRegistry
	results []*checkResult // of reg.checks, when checks is true
	details bool           // the request may see the details
	checks  bool           // the checks ran and are reported
	code    int            // HTTP status
	word    string         // the status word of the spec format
	lockErr error          // the lock's Err, when checks is true
	now     time.Time
	mem     *memorySample // when details is true
}

var healthScratchPool = sync.Pool{New: func() any { return &healthScratch{buf: make([]byte, 0, 1024)} }}

// Header values shared by every response, so that setting them allocates
// nothing. The slices have no spare capacity: Header.Add on them copies.
var (
	hdrJSON       = []string{healthContentType}[:1:1]
	hdrHealthJSON = []string{healthJSONContentType}[:1:1]
	hdrNoStore    = []string{"no-store"}[:1:1]
	hdrNosniff    = []string{"nosniff"}[:1:1]
	hdrAllow      = []string{"GET, HEAD"}[:1:1]
	hdrText       = []string{"text/plain; charset=utf-8"}[:1:1]
)

// The outcome of a request, in order of precedence.
type healthOutcome uint8

const (
	outcomeOK healthOutcome = iota
	outcomeDegraded
	outcomeError
	outcomeLifecycle // starting, stopping or stopped
)

// serve answers r with readiness semantics when ready is true, with
// liveness semantics otherwise.
func (h *Health) serve(w http.ResponseWriter, r *http.Request, ready bool) {
	hdr := w.Header()
	hdr["Cache-Control"] = hdrNoStore
	hdr["X-Content-Type-Options"] = hdrNosniff
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hdr["Allow"] = hdrAllow
		hdr["Content-Type"] = hdrText
		w.WriteHeader(http.StatusMethodNotAllowed)
		_, _ = w.Write([]byte("method not allowed: use GET or HEAD\n"))
		return
	}
	s := healthScratchPool.Get().(*healthScratch)
	defer s.release()
	h.decide(r, ready, s)
	if wantsHealthJSON(r.Header["Accept"]) {
		hdr["Content-Type"] = hdrHealthJSON
		s.buf = h.appendHealthJSON(s.buf[:0], &s.rep)
	} else {
		hdr["Content-Type"] = hdrJSON
		s.buf = h.appendSpec(s.buf[:0], &s.rep)
	}
	if r.Method == http.MethodHead {
		hdr["Content-Length"] = []string{strconv.Itoa(len(s.buf))}
	}
	w.WriteHeader(s.rep.code)
	if r.Method != http.MethodHead {
		_, _ = w.Write(s.buf)
	}
}

// decide fills s.rep for a request: it runs the checks when readiness is
// asked for in a lifecycle that has them, and picks the code and the word.
func (h *Health) decide(r *http.Request, ready bool, s *healthScratch) {
	rep := &s.rep
	rep.now = time.Now()
	rep.reg = h.reg.Load()
	rep.details = h.Public == nil || h.Public(r)
	st := StatusRunning
	if h.state != nil {
		st = h.state.Status()
	}
	outcome := outcomeOK
	rep.checks = ready && (st == StatusStarting || st == StatusRunning)
	if rep.checks {
		h.evaluate(r.Context(), rep.reg, rep.now, s)
		rep.results = s.results
		outcome = h.checkOutcome(rep)
	}
	if !ready && st != StatusStopped && rep.reg.critical && h.live(r.Context()) != nil {
		outcome = outcomeError
	}
	if st != StatusRunning && (ready || st == StatusStopped) {
		outcome = outcomeLifecycle
	}
	rep.code = http.StatusOK
	if outcome >= outcomeError {
		rep.code = http.StatusServiceUnavailable
	}
	rep.word = [...]string{"ok", "degraded", "error", st.String()}[outcome]
	if !ready && st != StatusRunning {
		rep.word = st.String() // liveness reports the lifecycle while still answering 200
	}
	if rep.details {
		rep.mem = h.memory(rep.now)
	}
}

// checkOutcome returns the outcome that the checks' results and the lock
// give, and records the lock's error in rep.
func (h *Health) checkOutcome(rep *healthReport) healthOutcome {
	outcome := outcomeOK
	for i, c := range rep.reg.checks {
		if rep.results[i].err == nil {
			continue
		}
		if c.Optional {
			outcome = max(outcome, outcomeDegraded)
		} else {
			outcome = outcomeError
		}
	}
	if h.lk != nil {
		if rep.lockErr = h.lk.Err(); rep.lockErr != nil {
			outcome = outcomeError
		}
	}
	return outcome
}

func (s *healthScratch) release() {
	clear(s.results)
	clear(s.flights)
	s.results, s.flights = s.results[:0], s.flights[:0]
	s.rep = healthReport{}
	if cap(s.buf) > 64<<10 {
		return // an unusual answer; do not keep its memory
	}
	healthScratchPool.Put(s)
}

// wantsHealthJSON reports whether an Accept header names
// application/health+json with a q-value above 0.
func wantsHealthJSON(accept []string) bool {
	for _, line := range accept {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ",")
			mt, params, _ := strings.Cut(part, ";")
			if !strings.EqualFold(strings.TrimSpace(mt), healthJSONContentType) {
				continue
			}
			for params != "" {
				var p string
				p, params, _ = strings.Cut(params, ";")
				k, v, _ := strings.Cut(p, "=")
				if strings.EqualFold(strings.TrimSpace(k), "q") {
					if q, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && q <= 0 {
						return false
					}
				}
			}
			return true
		}
	}
	return false
}

// appendSpec renders the default format.
func (h *Health) appendSpec(b []byte, rep *healthReport) []byte {
	b = appendJSONString(append(b, `{"status":`...), rep.word)
	if !rep.details {
		return append(b, '}')
	}
	b = h.appendSpecMetrics(b, rep)
	b = appendSpecChecks(b, rep)
	b = append(b, h.fixed...)
	b = appendTimestamp(append(b, `,"timestamp":`...), rep.now)
	b = append(b, h.tail...)
	b = appendSpecDetails(b, rep)
	return append(b, '}')
}

// appendSpecMetrics appends the pid, the uptime, the memory and the
// counters.
func (h *Health) appendSpecMetrics(b []byte, rep *healthReport) []byte {
	mem := rep.mem
	b = strconv.AppendInt(append(b, `,"pid":`...), int64(h.pid), 10)
	b = strconv.AppendInt(append(b, `,"uptime":`...), int64(max(rep.now.Sub(h.startedAt), 0)/time.Second), 10)
	b = strconv.AppendUint(append(b, `,"memoryUsage":{"heapUsed":`...), mem.heapUsed, 10)
	b = strconv.AppendUint(append(b, `,"heapTotal":`...), mem.heapTotal, 10)
	b = strconv.AppendUint(append(b, `,"external":`...), mem.external, 10)
	if mem.hasRSS {
		b = strconv.AppendUint(append(b, `,"rss":`...), mem.rss, 10)
	}
	b = append(b, '}')
	for _, c := range rep.reg.counters {
		b = strconv.AppendInt(append(b, c.key...), int64(c.f()), 10)
	}
	return b
}

// appendSpecChecks appends each check's pass or fail word.
func appendSpecChecks(b []byte, rep *healthReport) []byte {
	if !rep.checks {
		return b
	}
	for i, c := range rep.reg.checks {
		b = append(b, c.key...)
		if rep.results[i].err == nil {
			b = append(b, c.passJSON...)
		} else {
			b = append(b, c.failJSON...)
		}
	}
	return b
}

// appendSpecDetails appends the "details" object naming each failure, if
// anything failed.
func appendSpecDetails(b []byte, rep *healthReport) []byte {
	start := len(b)
	b = append(b, `,"details":{`...)
	n := len(b)
	if rep.checks {
		for i, c := range rep.reg.checks {
			if r := rep.results[i]; r.err != nil {
				b = append(append(b, c.key[1:]...), r.errJSON...)
				b = append(b, ',')
			}
		}
	}
	if rep.lockErr != nil {
		b = appendJSONString(append(b, `"lock":`...), errorText(rep.lockErr))
		b = append(b, ',')
	}
	if len(b) == n {
		return b[:start] // nothing failed
	}
	return append(b[:len(b)-1], '}')
}

// appendHealthJSON renders the IETF draft format (application/health+json).
func (h *Health) appendHealthJSON(b []byte, rep *healthReport) []byte {
	status := "pass"
	switch {
	case rep.code >= 500:
		status = "fail"
	case rep.word != "ok":
		status = "warn"
	}
	b = appendJSONString(append(b, `{"status":`...), status)
	if !rep.details {
		return append(b, '}')
	}
	switch {
	case rep.lockErr != nil && rep.word == "error":
		b = appendJSONString(append(b, `,"output":`...), "lock: "+errorText(rep.lockErr))
	case rep.word != "ok" && rep.word != "error" && rep.word != "degraded":
		b = appendJSONString(append(b, `,"output":`...), rep.word)
	}
	b = append(b, h.hjTail...)
	b = h.appendHealthJSONSystem(append(b, `,"checks":{`...), rep)
	b = appendHealthJSONChecks(b, rep)
	return append(b, "}}"...)
}

// appendHealthJSONSystem appends the uptime, memory and counter entries of
// "checks".
func (h *Health) appendHealthJSONSystem(b []byte, rep *healthReport) []byte {
	mem := rep.mem
	b = appendSeconds(append(b, `"uptime":[{"componentType":"system","observedValue":`...), max(rep.now.Sub(h.startedAt), 0))
	b = appendTimestamp(append(b, `,"observedUnit":"s","status":"pass","time":`...), rep.now)
	b = append(b, "}]"...)
	for _, m := range []struct {
		key string
		v   uint64
		ok  bool
	}{{"heapUsed", mem.heapUsed, true}, {"heapTotal", mem.heapTotal, true}, {"external", mem.external, true}, {"rss", mem.rss, mem.hasRSS}} {
		if !m.ok {
			continue
		}
		b = append(append(append(b, `,"memory:`...), m.key...), `":[{"componentType":"system","observedValue":`...)
		b = strconv.AppendUint(b, m.v, 10)
		b = appendTimestamp(append(b, `,"observedUnit":"bytes","status":"pass","time":`...), mem.at)
		b = append(b, "}]"...)
	}
	for _, c := range rep.reg.counters {
		b = strconv.AppendInt(append(b, c.hjKey...), int64(c.f()), 10)
		b = appendTimestamp(append(b, `,"status":"pass","time":`...), rep.now)
		b = append(b, "}]"...)
	}
	return b
}

// appendHealthJSONChecks appends each check's entry of "checks": its
// response time, status and failure.
func appendHealthJSONChecks(b []byte, rep *healthReport) []byte {
	if !rep.checks {
		return b
	}
	for i, c := range rep.reg.checks {
		r := rep.results[i]
		b = appendSeconds(append(b, c.hjKey...), r.took*1000) // milliseconds
		b = append(b, `,"observedUnit":"ms","status":`...)
		switch {
		case r.err == nil:
			b = append(b, `"pass"`...)
		case c.Optional:
			b = append(b, `"warn"`...)
		default:
			b = append(b, `"fail"`...)
		}
		b = appendTimestamp(append(b, `,"time":`...), r.at)
		if r.err != nil {
			b = append(append(b, `,"output":`...), r.errJSON...)
		}
		b = append(b, "}]"...)
	}
	return b
}

// appendSeconds appends d in seconds with millisecond precision.
func appendSeconds(b []byte, d time.Duration) []byte {
	ms := int64(d / time.Millisecond)
	b = strconv.AppendInt(b, ms/1000, 10)
	frac := ms % 1000
	return append(b, '.', byte('0'+frac/100), byte('0'+frac/10%10), byte('0'+frac%10))
}

// appendTimestamp appends t as a quoted UTC time with milliseconds,
// "2025-11-27T21:00:00.000Z", as JavaScript's Date.toISOString writes it.
func appendTimestamp(b []byte, t time.Time) []byte {
	t = t.UTC()
	y, mo, d := t.Date()
	hh, mm, ss := t.Clock()
	ms := t.Nanosecond() / int(time.Millisecond)
	if y < 0 || y > 9999 {
		return t.AppendFormat(append(b, '"'), `2006-01-02T15:04:05.000Z"`)
	}
	return append(b, '"',
		byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10), '-',
		byte('0'+int(mo)/10), byte('0'+int(mo)%10), '-', byte('0'+d/10), byte('0'+d%10), 'T',
		byte('0'+hh/10), byte('0'+hh%10), ':', byte('0'+mm/10), byte('0'+mm%10), ':',
		byte('0'+ss/10), byte('0'+ss%10), '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10), 'Z', '"')
}

// appendJSONString appends s as a JSON string. Like encoding/json it
// escapes <, > and & (the answer may be shown in a browser), U+2028 and
// U+2029, and replaces invalid UTF-8 with U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(append(b, s[start:i]...), `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(append(b, s[start:i]...), '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	return append(append(b, s[start:]...), '"')
}

// memoryMetrics are read from runtime/metrics, which, unlike
// runtime.ReadMemStats, does not stop the world.
var memoryMetrics = [...]string{
	"/memory/classes/heap/objects:bytes",  // heapUsed
	"/memory/classes/heap/unused:bytes",   // + unused + free = heapTotal
	"/memory/classes/heap/free:bytes",     //
	"/memory/classes/heap/released:bytes", // returned to the OS: neither heap nor external
	"/memory/classes/total:bytes",         // − the above = external (stacks, runtime metadata, …)
}

// memorySample is one reading of memoryUsage.
type memorySample struct {
	at                            time.Time
	heapUsed, heapTotal, external uint64
	rss                           uint64
	hasRSS                        bool
}

// memory returns the current sample, refreshing it in this request if it
// is older than memorySampleInterval and no other request is doing so.
func (h *Health) memory(now time.Time) *memorySample {
	m := h.mem.Load()
	if now.Sub(m.at) < memorySampleInterval || !h.memBusy.CompareAndSwap(false, true) {
		return m
	}
	defer h.memBusy.Store(false)
	m = h.sampleMemory(now)
	h.mem.Store(m)
	return m
}

// sampleMemory reads the memory statistics; the caller owns memReader.
func (h *Health) sampleMemory(now time.Time) *memorySample {
	metrics.Read(h.memReader)
	var v [len(memoryMetrics)]uint64
	for i, s := range h.memReader {
		if s.Value.Kind() == metrics.KindUint64 {
			v[i] = s.Value.Uint64()
		}
	}
	heapTotal := v[0] + v[1] + v[2]
	m := &memorySample{at: now, heapUsed: v[0], heapTotal: heapTotal}
	if v[4] > heapTotal+v[3] {
		m.external = v[4] - heapTotal - v[3]
	}
	m.rss, m.hasRSS = readRSS()
	return m
}

// healthCheck is a registered Check with its cached result.
type healthCheck struct {
	Check
	key      []byte // `,"name":`
	hjKey    []byte // `,"name:responseTime":[{…,"observedValue":`
	passJSON []byte // the quoted Pass word
	failJSON []byte // the quoted Fail word

	last atomic.Pointer[checkResult] // the latest result, nil before the first

	mu      sync.Mutex
	flight  *checkFlight // the refresh under way, nil when none
	running bool         // Run has been called and has not returned
	since   time.Time    // when the running call began
}

// checkResult is one outcome of a check. It is immutable once published.
type checkResult struct {
	err     error
	errJSON []byte        // err's text as a JSON string
	at      time.Time     // when the outcome was known
	took    time.Duration // how long Run took (the timeout when it timed out)
}

// checkFlight is one refresh of a check; requests that need the result wait
// for done.
type checkFlight struct {
	done chan struct{}
	res  *checkResult // set before done is closed
}

// errCheckGoexit is reported when Run ended by runtime.Goexit.
var errCheckGoexit = errors.New("check did not return (runtime.Goexit)")

// checkTimeoutError is the failure of a run that outlived its Timeout.
type checkTimeoutError struct{ d time.Duration }

func (e *checkTimeoutError) Error() string { return "check timed out after " + e.d.String() }

// evaluate fills s.results with a result for each check of reg: the cached
// one if younger than CacheTTL, otherwise a fresh one. All refreshes start
// before the first is waited for, so checks run concurrently.
func (h *Health) evaluate(ctx context.Context, reg *healthRegistry, now time.Time, s *healthScratch) {
	ttl := h.CacheTTL
	if ttl <= 0 {
		ttl = DefaultCacheTTL
	}
	waiting := false
	for _, c := range reg.checks {
		r, f := c.result(now, ttl)
		s.results = append(s.results, r)
		s.flights = append(s.flights, f)
		waiting = waiting || f != nil
	}
	if !waiting {
		return
	}
	for i, f := range s.flights {
		if f == nil {
			continue
		}
		select {
		case <-f.done:
			s.results[i] = f.res
		case <-ctx.Done():
			err := fmt.Errorf("request ended before the check: %w", context.Cause(ctx))
			s.results[i] = &checkResult{err: err, errJSON: appendJSONString(nil, errorText(err)), at: time.Now()}
		}
	}
}

// result returns the check's result if it is younger than ttl; otherwise
// the refresh to wait for, which it starts unless one is under way.
//
// A Run that ignores its context outlives its flight: the flight ends at
// the timeout with a failure, and the goroutine running Run stays until Run
// returns. No second call of Run is started meanwhile: a refresh due while
// the previous call is still running is answered at once with a failure,
// so there is never more than one goroutine per check, and none once every
// Run has returned.
func (c *healthCheck) result(now time.Time, ttl time.Duration) (*checkResult, *checkFlight) {
	if r := c.last.Load(); r != nil && now.Sub(r.at) < ttl {
		return r, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.last.Load(); r != nil && now.Sub(r.at) < ttl {
		return r, nil // refreshed while we waited for the lock
	}
	if c.flight != nil {
		return nil, c.flight
	}
	if c.running {
		err := fmt.Errorf("check has not returned %v after it was started (timeout %v); not started again until it does",
			now.Sub(c.since).Round(time.Millisecond), c.Timeout)
		r := &checkResult{err: err, errJSON: appendJSONString(nil, errorText(err)), at: now, took: now.Sub(c.since)}
		c.last.Store(r)
		return r, nil
	}
	f := &checkFlight{done: make(chan struct{})}
	c.flight, c.running, c.since = f, true, time.Now()
	go c.run(f, c.since)
	return nil, f
}

// run calls Run once under the check's timeout and ends f with its outcome,
// or with a timeout failure when the timeout comes first. A panic in Run is
// recovered and reported as the check's failure.
func (c *healthCheck) run(f *checkFlight, start time.Time) {
	ctx, cancel := context.WithTimeoutCause(context.Background(), c.Timeout, &checkTimeoutError{c.Timeout})
	// At the timeout, finish the flight without waiting for Run.
	stop := context.AfterFunc(ctx, func() { c.finish(f, context.Cause(ctx), start, false) })
	err := errCheckGoexit
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("check panicked: %v", v)
		}
		if stop() { // Run returned before the flight ended
			if err != nil && ctx.Err() != nil && isCause(err, ctx.Err()) {
				err = context.Cause(ctx) // it gave up at the timeout: say so
			}
			c.finish(f, err, start, true)
		} else { // the flight ended at the timeout; Run has returned only now
			c.mu.Lock()
			c.running = false
			c.mu.Unlock()
		}
		cancel()
	}()
	err = c.Run(ctx)
}

// errorText returns err.Error(), or says what went wrong when the Error
// method panics (a typed nil pointer returned as an error, whose method
// dereferences its receiver, is the usual cause): a check must never take
// the process down.
func errorText(err error) (s string) {
	defer func() {
		if v := recover(); v != nil {
			s = fmt.Sprintf("returned a %T whose Error method panicked: %v", err, v)
		}
	}()
	return err.Error()
}

// isCause is errors.Is(err, target), false when one of err's methods
// panics.
func isCause(err, target error) (is bool) {
	defer func() {
		if recover() != nil {
			is = false
		}
	}()
	return errors.Is(err, target)
}

// finish publishes a result and ends the flight; returned tells that Run
// has returned.
func (c *healthCheck) finish(f *checkFlight, err error, start time.Time, returned bool) {
	now := time.Now()
	r := &checkResult{err: err, at: now, took: now.Sub(start)}
	if err != nil {
		r.errJSON = appendJSONString(nil, errorText(err))
	}
	c.mu.Lock()
	c.last.Store(r)
	c.flight = nil
	c.running = c.running && !returned
	c.mu.Unlock()
	f.res = r
	close(f.done)
}
