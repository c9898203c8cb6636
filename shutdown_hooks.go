package instancelock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/signal"
	"reflect"
	"runtime"
	"runtime/debug"
	"time"
)

// The shutdown itself, once begun: drain, hooks under their deadlines,
// release.

// timeout returns the length of the overall deadline: Timeout, or
// defaultShutdownTimeout when it is 0; negative when there is none.
func (g *GracefulShutdown) timeout() time.Duration {
	if g.Timeout == 0 {
		return defaultShutdownTimeout
	}
	return g.Timeout
}

// run is the shutdown: drain, run the hooks, then finish (release the lock
// and close done), whatever the hooks did.
func (g *GracefulShutdown) run(cause error, hooks []namedHook) {
	log := g.logger()
	began := time.Now()
	var errs []error
	defer func() { g.finish(log, began, errs) }()

	log.Info("shutdown started", "cause", errorText(cause), "hooks", len(hooks))
	drain, timeout := max(g.DrainDelay, 0), g.timeout()
	g.sdStopping(cause, drain, timeout)
	if drain > 0 {
		log.Info("draining", "delay", drain)
		time.Sleep(drain)
	}
	var deadline time.Time // none
	if timeout >= 0 {
		deadline = time.Now().Add(timeout)
	}
	errs = g.runHooks(log, hooks, deadline)
}

// runHooks runs the hooks one at a time, last added first, under the
// overall deadline (zero for none), and returns their failures in the
// order they ran.
func (g *GracefulShutdown) runHooks(log *slog.Logger, hooks []namedHook, deadline time.Time) []error {
	var errs []error
	for i := len(hooks) - 1; i >= 0; i-- {
		h := hooks[i]
		g.sdHook(h.name, len(hooks)-i, len(hooks), deadline)
		start := time.Now()
		err := g.runHook(log, h, deadline)
		g.recordHook(h.name, time.Since(start), err)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// finish ends the shutdown: it releases the lock, moves the State to
// stopped, removes the signal handlers, records the failures (errs, and
// the release's) for Wait and closes done.
func (g *GracefulShutdown) finish(log *slog.Logger, began time.Time, errs []error) {
	if g.lk != nil {
		t := time.Now()
		if err := g.lk.Unlock(); err != nil {
			errs = append(errs, err)
			log.Error("releasing the lock", "duration", time.Since(t), "err", err)
		} else {
			log.Info("lock released", "duration", time.Since(t))
		}
	}
	if err := g.state.Set(StatusStopped); err != nil {
		log.Warn("setting the state", "err", err)
	}
	g.mu.Lock()
	if g.sigs != nil {
		signal.Stop(g.sigs)
	}
	g.mu.Unlock()
	g.err = errors.Join(errs...)
	g.sdNotify(fmt.Sprintf("STATUS=stopped, %d failures", len(errs)))
	log.Info("shutdown finished", "duration", time.Since(began), "failures", len(errs))
	close(g.done)
}

// runHook runs one hook and waits for it until shortly after its deadline
// (the overall deadline, zero for none, or HookTimeout if sooner). It
// returns nil on success or a *HookError, and logs which.
func (g *GracefulShutdown) runHook(log *slog.Logger, h namedHook, deadline time.Time) error {
	start := time.Now()
	ctx, cancel := hookContext(hookDeadline(start, deadline, g.HookTimeout))
	defer cancel()
	log.Info("running shutdown hook", "hook", h.name)
	herr, returned := waitHook(ctx, callHook(ctx, h), deadline)
	d := time.Since(start)
	if !returned {
		herr = &HookError{Name: h.name, Err: fmt.Errorf("abandoned: still running %v after it was called: %w",
			d.Round(time.Millisecond), context.DeadlineExceeded)}
	}
	logHook(log, h.name, d, herr, returned)
	if herr == nil {
		return nil
	}
	return herr
}

// hookDeadline is the deadline of a hook called at start: HookTimeout
// after start when that is set and sooner than the overall deadline,
// otherwise the overall deadline. The zero time means none.
func hookDeadline(start, overall time.Time, hookTimeout time.Duration) time.Time {
	if hookTimeout > 0 {
		if own := start.Add(hookTimeout); overall.IsZero() || own.Before(overall) {
			return own
		}
	}
	return overall
}

// hookContext returns the context of a hook with the given deadline (the
// zero time for none).
func hookContext(deadline time.Time) (context.Context, context.CancelFunc) {
	if deadline.IsZero() {
		return context.WithCancel(context.Background())
	}
	return context.WithDeadline(context.Background(), deadline)
}

// callHook calls the hook in a goroutine of its own and returns the channel
// that receives its outcome: nil, or a *HookError for an error, a panic
// (with its stack) or runtime.Goexit. It returns once the hook is called.
func callHook(ctx context.Context, h namedHook) <-chan *HookError {
	called := make(chan struct{})
	res := make(chan *HookError, 1) // buffered: an abandoned hook must not block
	go hookGoroutine(ctx, h, called, res)
	<-called
	return res
}

// hookGoroutine is the goroutine of one hook call (see callHook); inHook
// finds it on the stack.
func hookGoroutine(ctx context.Context, h namedHook, called chan<- struct{}, res chan<- *HookError) {
	returned := false
	defer func() {
		if r := recover(); r != nil {
			err, ok := r.(error)
			if !ok {
				err = fmt.Errorf("%v", r)
			}
			res <- &HookError{Name: h.name, Err: err, Panicked: true, Stack: debug.Stack()}
		} else if !returned {
			res <- &HookError{Name: h.name, Err: errors.New("the hook called runtime.Goexit")}
		}
	}()
	close(called)
	err := h.fn(ctx)
	returned = true
	if err != nil {
		res <- &HookError{Name: h.name, Err: err}
		return
	}
	res <- nil
}

// hookGoroutineName is the name of hookGoroutine in stack frames.
var hookGoroutineName = runtime.FuncForPC(reflect.ValueOf(hookGoroutine).Pointer()).Name()

// inHook reports whether the caller runs in a hook's goroutine: whether
// hookGoroutine is on its stack (at the bottom, so the whole stack is read).
// Go has no goroutine identity; the stack is the one trace a hook leaves.
func inHook() bool {
	pcs := make([]uintptr, 64)
	for {
		n := runtime.Callers(2, pcs)
		if n < len(pcs) {
			pcs = pcs[:n]
			break
		}
		pcs = make([]uintptr, 2*len(pcs))
	}
	frames := runtime.CallersFrames(pcs)
	for {
		f, more := frames.Next()
		if f.Function == hookGoroutineName {
			return true
		}
		if !more {
			return false
		}
	}
}

// waitHook waits for the hook's outcome until hookGrace after ctx is done
// and, when there is an overall deadline, no later than maxOverrun after
// it. returned is false if the hook has not returned by then.
func waitHook(ctx context.Context, res <-chan *HookError, deadline time.Time) (herr *HookError, returned bool) {
	select {
	case herr = <-res:
		return herr, true
	case <-ctx.Done():
	}
	grace := hookGrace
	if !deadline.IsZero() {
		grace = min(grace, time.Until(deadline.Add(maxOverrun)))
	}
	if grace > 0 {
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case herr = <-res:
			return herr, true
		case <-t.C:
		}
	}
	select {
	case herr = <-res: // it returned just now
		return herr, true
	default:
		return nil, false
	}
}

// logHook logs the outcome of a hook that ran for d: done, failed,
// panicked (with its stack), or abandoned when it has not returned.
func logHook(log *slog.Logger, name string, d time.Duration, herr *HookError, returned bool) {
	switch {
	case !returned:
		log.Error("shutdown hook abandoned; running the next", "hook", name, "duration", d, "err", herr.Err)
	case herr == nil:
		log.Info("shutdown hook done", "hook", name, "duration", d)
	case herr.Panicked:
		log.Error("shutdown hook panicked", "hook", name, "duration", d, "err", herr.Err, "stack", string(herr.Stack))
	default:
		log.Error("shutdown hook failed", "hook", name, "duration", d, "err", herr.Err)
	}
}
