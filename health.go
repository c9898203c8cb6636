package instancelock

import (
	"context"
	"log/slog"
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

// The defaults of Health.CacheTTL and Check.Timeout.
const (
	defaultCacheTTL     = time.Second
	defaultCheckTimeout = 2 * time.Second
)

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
// or fail; checks keyed "component:measurement", uptime as a system check),
// unless it gives application/json a higher q-value. Every answer to GET
// and HEAD carries Vary: Accept.
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
// Create it with NewHealth; set the exported fields before any other
// method call and do not change them afterwards (their zero values are the
// defaults), then register checks and counters before serving. The zero
// Health is ready to use: it is NewHealth(nil, nil), the health of the
// process alone (the lifecycle counts as running, no lock is checked, no
// instanceId is reported, startedAt is the process's start time). A Health
// is safe for concurrent use.
type Health struct {
	// CacheTTL is how long a check's result is reused, so that a burst of
	// probes runs each check at most once. 0 means 1 second. Negative means
	// no reuse: every probe runs the checks (probes that arrive while a
	// check runs still share that run).
	CacheTTL time.Duration
	// Public tells whether the caller may see details. nil: every caller
	// does. When it returns false the body is only {"status":"..."}; the
	// status code is the same.
	Public func(*http.Request) bool
	// Logger receives a record when a check starts failing (Warn), passes
	// again (Info) or panics (Error, with the stack); nil means silent. A
	// check's logger is the one set when it is added.
	Logger *slog.Logger

	initOnce sync.Once // sets up what follows, for the zero value too

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
// database. Name and Run are required (AddCheck refuses a Check without
// them); the other fields' zero values are their defaults.
type Check struct {
	// Name is the field of the check's word in the default format (for
	// example "databaseStatus") and the component name in
	// application/health+json ("databaseStatus:responseTime").
	Name string
	// Run performs the check; a nil error means passing. It runs in its
	// own goroutine under a context that ends after Timeout, and must be
	// safe to call again after it returned.
	Run func(ctx context.Context) error
	// Timeout bounds one run: Run's context ends Timeout after the call,
	// and the check is then reported failed. 0 means 2 seconds. Negative
	// means no limit: Run's context never ends, and a probe waits for Run
	// until the probe's own request ends (the check is then reported
	// failed in that answer).
	Timeout time.Duration
	// Optional makes a failure report "degraded" with 200 instead of
	// "error" with 503. A check cannot be both Optional and Critical.
	Optional bool
	// Critical makes a failure fail liveness too: Liveness answers 503 and
	// the systemd watchdog of a GracefulShutdown on the same State stops
	// pinging, so the supervisor restarts the instance. Mark only what a
	// restart fixes (a wedged worker), not a dependency an outage takes
	// down, or an outage becomes a restart loop. AddCheck refuses a check
	// that is both Critical and Optional (ready but to be restarted).
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
// os.Getpid(). It does not fix the configuration of a *Locker (see
// Locker): its fields may be set after.
func NewHealth(state *State, lk Mutex) *Health {
	h := &Health{state: state, lk: nilMutex(lk)}
	h.init()
	if state != nil {
		state.addHealth(h)
	}
	return h
}

// init sets up what serving needs, once; the exported methods call it
// first, so that the zero value works.
func (h *Health) init() {
	h.initOnce.Do(func() {
		h.pid = os.Getpid()
		id := ""
		switch {
		case h.state != nil:
			h.startedAt, id = h.state.StartedAt(), h.state.InstanceID()
		default:
			if _, at, err := processStart(h.pid); err == nil && !at.IsZero() {
				h.startedAt = at
			} else {
				h.startedAt = time.Now()
			}
			if h.lk != nil {
				id = h.lk.InstanceID()
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
		h.memReader = make([]metrics.Sample, len(memoryMetrics))
		for i, name := range memoryMetrics {
			h.memReader[i].Name = name
		}
		h.mem.Store(h.sampleMemory(time.Now()))
	})
}

// cacheTTL returns how long a check's result is reused: CacheTTL, 1 s when
// it is 0, and 0 when it is negative (only a result known after the probe
// began is reused then: that of a run the probe shared).
func (h *Health) cacheTTL() time.Duration {
	if h.CacheTTL == 0 {
		return defaultCacheTTL
	}
	return max(h.CacheTTL, 0)
}

// logger returns Logger, or a silent one.
func (h *Health) logger() *slog.Logger {
	if h.Logger != nil {
		return h.Logger
	}
	return slog.New(slog.DiscardHandler)
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
// details, lock), not valid UTF-8 or already taken by a check or counter,
// when the key it reports in application/health+json ("Name:responseTime")
// is taken by a counter, when Run is nil, or when the check is both
// Optional and Critical. Register checks before serving; a check added
// later is used from the next request on.
func (h *Health) AddCheck(c Check) {
	if c.Run == nil {
		panic("instancelock: Health.AddCheck: nil Run for check " + strconv.Quote(c.Name))
	}
	if c.Optional && c.Critical {
		panic("instancelock: Health.AddCheck: check " + strconv.Quote(c.Name) + " is both Optional (a failure keeps it ready) " +
			"and Critical (a failure fails liveness, a restart): choose one")
	}
	if c.Timeout == 0 {
		c.Timeout = defaultCheckTimeout
	}
	if c.Pass == "" {
		c.Pass = "ok"
	}
	if c.Fail == "" {
		c.Fail = "error"
	}
	hc := &healthCheck{Check: c, log: h.logger().With("check", c.Name)}
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
// AddCheck), not valid UTF-8, already taken by a check or counter, or a key that
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
// holds a duplicate key (names are valid UTF-8, so that each is its own
// JSON key).
//
// The new registry shares the old one's backing arrays: add only appends,
// and a request reads no further than the length of the registry it
// loaded, so registering n entries costs O(n) in all, not O(n²).
func (h *Health) register(op, name, key string, add func(*healthRegistry)) {
	h.init()
	if name == "" {
		panic("instancelock: Health." + op + ": empty name")
	}
	if !utf8.ValidString(name) {
		// JSON would turn each invalid byte into U+FFFD, and two names
		// could then give one key.
		panic("instancelock: Health." + op + ": name " + strconv.Quote(name) + " is not valid UTF-8")
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
// ("error" when a Critical check fails while running; "details" then names
// that check and its error, and application/health+json's "output" says the
// same). The same rule
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
	// The failing Critical check and its error, when liveness fails
	// because of one.
	liveCheck *healthCheck
	liveErr   error
	now       time.Time
	mem       *memorySample // when details is true
}

var healthScratchPool = sync.Pool{New: func() any { return &healthScratch{buf: make([]byte, 0, 1024)} }}

// Header values shared by every response, so that setting them allocates
// nothing. The slices have no spare capacity: Header.Add on them copies.
var (
	hdrJSON       = []string{healthContentType}[:1:1]
	hdrHealthJSON = []string{healthJSONContentType}[:1:1]
	hdrNoStore    = []string{"no-store"}[:1:1]
	hdrNosniff    = []string{"nosniff"}[:1:1]
	hdrVaryAccept = []string{"Accept"}[:1:1]
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
	h.init()
	s := healthScratchPool.Get().(*healthScratch)
	defer s.release()
	h.decide(r, ready, s)
	if v := hdr["Vary"]; v == nil { // the format depends on Accept
		hdr["Vary"] = hdrVaryAccept
	} else if !variesWith(v, "Accept") {
		hdr["Vary"] = append(v, "Accept") // a middleware's Vary stays
	}
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
	if !ready && (st == StatusStarting || st == StatusRunning) && rep.reg.critical {
		if c, err := h.criticalFailure(r.Context(), rep.reg); err != nil {
			outcome = outcomeError
			rep.liveCheck, rep.liveErr = c, err
		}
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

// wantsHealthJSON reports whether an Accept header prefers
// application/health+json to application/json: it must name
// application/health+json itself (a wildcard never picks it) with a q-value
// above 0, and no lower than the q-value application/json gets from the
// most specific range that matches it (application/json, application/*,
// */*; 0 when none does). A tie goes to application/health+json, the type
// the client named. A q-value that does not parse counts as 1.
func wantsHealthJSON(accept []string) bool {
	hj, json := -1.0, 0.0 // q-values; -1: not named
	jsonSpec := 0         // specificity of the range json comes from
	for _, line := range accept {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ",")
			mt, params, _ := strings.Cut(part, ";")
			mt = strings.TrimSpace(mt)
			spec := 0
			switch {
			case strings.EqualFold(mt, healthJSONContentType):
				spec = -1
			case strings.EqualFold(mt, "application/json"):
				spec = 3
			case strings.EqualFold(mt, "application/*"):
				spec = 2
			case mt == "*/*":
				spec = 1
			default:
				continue
			}
			q := acceptQ(params)
			switch {
			case spec < 0:
				hj = max(hj, q)
			case spec > jsonSpec:
				json, jsonSpec = q, spec
			case spec == jsonSpec:
				json = max(json, q)
			}
		}
	}
	return hj > 0 && hj >= json
}

// acceptQ returns the q-value among the parameters of a media range of an
// Accept header; 1 when there is none or it does not parse.
func acceptQ(params string) float64 {
	for params != "" {
		var p string
		p, params, _ = strings.Cut(params, ";")
		k, v, _ := strings.Cut(p, "=")
		if strings.EqualFold(strings.TrimSpace(k), "q") {
			if q, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
				return q
			}
		}
	}
	return 1
}

// variesWith reports whether the Vary header values v already name field
// (a list of names, case-insensitive; "*" names every field), so that a
// handler wrapped twice, or a middleware that set Vary: Accept, does not
// get it twice.
func variesWith(v []string, field string) bool {
	for _, line := range v {
		if line == field {
			return true // the usual case, without splitting
		}
		for name := range strings.SplitSeq(line, ",") {
			if name = strings.TrimSpace(name); name == "*" || strings.EqualFold(name, field) {
				return true
			}
		}
	}
	return false
}
