package instancelock

// Running the checks of a Health: caching, one run at a time, timeouts.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// healthCheck is a registered Check with its cached result.
type healthCheck struct {
	Check
	key      []byte // `,"name":`
	hjKey    []byte // `,"name:responseTime":[{…,"observedValue":`
	passJSON []byte // the quoted Pass word
	failJSON []byte // the quoted Fail word
	log      *slog.Logger

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
	ttl := h.cacheTTL()
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
// recovered, logged with its stack and reported as the check's failure.
func (c *healthCheck) run(f *checkFlight, start time.Time) {
	ctx, cancel := c.runContext()
	// At the timeout, finish the flight without waiting for Run.
	stop := context.AfterFunc(ctx, func() { c.finish(f, context.Cause(ctx), start, false) })
	err := errCheckGoexit
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("check panicked: %v", v)
			c.log.Error("health check panicked", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
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

// runContext returns the context of one call of Run: it ends at the
// check's Timeout with a *checkTimeoutError as its cause, or never when
// Timeout is negative (no limit).
func (c *healthCheck) runContext() (context.Context, context.CancelFunc) {
	if c.Timeout < 0 {
		return context.WithCancel(context.Background())
	}
	return context.WithTimeoutCause(context.Background(), c.Timeout, &checkTimeoutError{c.Timeout})
}

// errorText returns err.Error(), or says what went wrong when the Error
// method panics (a typed nil pointer returned as an error, whose method
// dereferences its receiver, is the usual cause): neither a check's error
// nor a shutdown's cause must ever take the process down. Health and
// GracefulShutdown both format errors they did not make with it.
func errorText(err error) (s string) {
	defer func() {
		if v := recover(); v != nil {
			s = fmt.Sprintf("an error of type %T whose Error method panicked: %v", err, v)
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
// has returned. A change between passing and failing is logged.
func (c *healthCheck) finish(f *checkFlight, err error, start time.Time, returned bool) {
	now := time.Now()
	r := &checkResult{err: err, at: now, took: now.Sub(start)}
	if err != nil {
		r.errJSON = appendJSONString(nil, errorText(err))
	}
	c.mu.Lock()
	prev := c.last.Swap(r)
	c.flight = nil
	c.running = c.running && !returned
	c.mu.Unlock()
	failed := prev != nil && prev.err != nil
	switch {
	case err != nil && !failed:
		c.log.Warn("health check failing", "err", errorText(err), "took", r.took)
	case err == nil && failed:
		c.log.Info("health check passing again", "took", r.took)
	}
	f.res = r
	close(f.done) // after the log record: the probes that waited see it written
}
