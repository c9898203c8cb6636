package instancelock

import "time"

// CheckResult is the latest outcome of one of a Health's checks, as the
// probes saw it: Health.CheckResults returns one per check.
type CheckResult struct {
	Name     string        // the Check's Name
	Optional bool          // the Check's Optional
	Critical bool          // the Check's Critical
	Ran      bool          // false until a probe ran the check once; the fields below are then zero
	Err      error         // nil when the check passed
	Duration time.Duration // how long Run took (the Timeout when it timed out)
	At       time.Time     // when the outcome was known
}

// CheckResults returns the latest result of each check, in the order of
// AddCheck. It runs no check and never waits for one: the results are those
// of the last probe (ServeHTTP or Readiness) that needed them, reused for
// CacheTTL, so they are as fresh as the probes make them; At tells how fresh.
// A check that no probe has run yet has Ran false. It is safe to call from
// any goroutine, for example from a metrics collector.
func (h *Health) CheckResults() []CheckResult {
	h.init()
	checks := h.reg.Load().checks
	out := make([]CheckResult, len(checks))
	for i, c := range checks {
		out[i] = CheckResult{Name: c.Name, Optional: c.Optional, Critical: c.Critical}
		if r := c.last.Load(); r != nil {
			out[i].Ran, out[i].Err, out[i].Duration, out[i].At = true, r.err, r.took, r.at
		}
	}
	return out
}

// HookResult is the outcome of one shutdown hook that has run:
// GracefulShutdown.HookResults returns one per hook.
type HookResult struct {
	Name     string        // the name given to Add
	Duration time.Duration // from the call until it returned or was abandoned
	Err      error         // nil on success, else the *HookError that Wait reports
}

// hookResults records the outcome of each hook as it finishes.
type hookResults struct {
	list []HookResult // under GracefulShutdown.mu
}

// HookResults returns the outcome of each hook that has finished so far, in
// the order they ran (the reverse of Add). It is empty before the shutdown
// and grows while the hooks run; once Done is closed it holds every hook.
// It never blocks on a running hook, so a metrics collector may call it
// during the shutdown.
func (g *GracefulShutdown) HookResults() []HookResult {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]HookResult(nil), g.results.list...)
}

// recordHook appends one hook's outcome to the results.
func (g *GracefulShutdown) recordHook(name string, d time.Duration, err error) {
	g.mu.Lock()
	g.results.list = append(g.results.list, HookResult{Name: name, Duration: d, Err: err})
	g.mu.Unlock()
}
