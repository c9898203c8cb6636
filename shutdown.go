package instancelock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/ad5dec64/instancelock/internal/sdnotify"
)

// defaultShutdownTimeout is the overall deadline of the shutdown hooks when
// GracefulShutdown.Timeout is 0.
const defaultShutdownTimeout = 5 * time.Second

// How long the helper waits for a hook after the hook's context is done,
// before it abandons the hook: hookGrace for each hook, and never more than
// maxOverrun past the overall deadline in all. A hook that honours its
// context returns well within hookGrace, and its own error is reported.
const (
	hookGrace  = 5 * time.Millisecond
	maxOverrun = 20 * time.Millisecond
)

// lockPoll is how often the helper re-reads the lock's Lost channel while
// it is started, to watch a lock acquired or acquired again after Start
// (see Start). It costs one call of Lost per period.
const lockPoll = 100 * time.Millisecond

// forceReleaseTimeout bounds the best-effort release of the lock on a
// forced exit. If the release does not finish in time the process exits
// anyway: the kernel drops the lock at exit and the next start takes the
// left-over PID file over as stale.
const forceReleaseTimeout = 500 * time.Millisecond

// osExit is the forced exit; tests replace it.
var osExit = os.Exit

// ErrShutdownRequested is the cause of a shutdown started by
// GracefulShutdown.Shutdown(nil).
var ErrShutdownRequested = errors.New("shutdown requested")

// SignalError is the cause of a shutdown started by a signal: context.Cause
// of GracefulShutdown.Context returns a *SignalError, which errors.As finds.
type SignalError struct {
	Signal os.Signal // the signal received
}

// Error returns "received signal " and the signal's name, for example
// "received signal terminated"; "received signal <nil>" when there is no
// Signal (or no SignalError).
func (e *SignalError) Error() string {
	if e == nil || e.Signal == nil {
		return "received signal <nil>"
	}
	return "received signal " + e.Signal.String()
}

// HookError is one failed shutdown hook: it returned an error, panicked, or
// did not return before its deadline (then Err matches
// context.DeadlineExceeded). GracefulShutdown.Wait returns the HookErrors
// joined with errors.Join; errors.As finds the first.
type HookError struct {
	Name     string // the name given to Add
	Err      error  // what the hook returned, the panic value as an error, or why it was abandoned
	Panicked bool   // the hook panicked; Stack holds its stack
	Stack    []byte // the stack of the panicking goroutine, when Panicked
}

// Error names the hook and says what went wrong, on one line. The stack of a
// panic is not included (it is logged, and kept in Stack).
func (e *HookError) Error() string {
	if e.Panicked {
		return fmt.Sprintf("instancelock: shutdown hook %q panicked: %v", e.Name, e.Err)
	}
	return fmt.Sprintf("instancelock: shutdown hook %q: %v", e.Name, e.Err)
}

// Unwrap returns Err.
func (e *HookError) Unwrap() error { return e.Err }

// GracefulShutdown runs a program's shutdown hooks when it receives SIGTERM
// or SIGINT (or when the program asks), then releases the instance lock.
//
// A shutdown goes through these steps, each logged:
//
//  1. The State moves to StatusStopping, so readiness checks answer 503 and
//     load balancers drain; Context is cancelled with the cause.
//  2. If DrainDelay is set, it waits that long.
//  3. The hooks run one at a time in reverse order of Add, like deferred
//     calls, under one overall deadline (Timeout, 5 s by default) that
//     starts now. Each hook gets a context whose deadline is the overall
//     deadline, or HookTimeout from the hook's start if that is sooner. A hook that has not returned
//     shortly (5 ms) after its context is done is abandoned, logged and
//     reported; the next hook runs. Hooks left when the overall deadline has
//     passed are still called, with a context that is already done, so they
//     can release at once what they can (an http.Server's Shutdown closes its
//     listeners). In all, the hooks end at most 20 ms after the overall
//     deadline. An error or a panic in a hook (recovered, and logged with its
//     stack) does not stop the others.
//  4. The lock given to NewGracefulShutdown is released, whatever the hooks
//     did; the State moves to StatusStopped; the signal handlers are
//     removed; Done is closed.
//
// While a shutdown runs, a second signal (counting the one that started it)
// makes the process exit at once with status 128+signal (130 for SIGINT,
// 143 for SIGTERM), after releasing the lock if that takes less than half a
// second. Two signals sent back to back may reach the process as one (the
// kernel does not queue a signal that is already pending).
//
// On Unix, two more signals are handled from Start on, so that neither
// kills the process without its hooks: SIGHUP (a closed terminal or ssh
// session) calls Hangup if it is set, and otherwise begins the shutdown
// like the signals in Signals; SIGPIPE is notified, so that a write to a
// closed standard output or error (a log reader that exited) returns EPIPE
// instead of killing the process. SIGPIPE stays notified until the process
// exits, so a last log line after Done cannot kill it either.
//
// Under systemd (NOTIFY_SOCKET is set; nothing is sent otherwise), Start
// also sends what a Type=notify service owes its manager: READY=1 when the
// State moves to StatusRunning, STOPPING=1 when the shutdown begins,
// EXTEND_TIMEOUT_USEC then and before each hook while the overall deadline
// has not passed (so TimeoutStopSec= does not cut a shutdown that is on
// time), and STATUS= lines along the way. When WATCHDOG_USEC is set for
// this process (WATCHDOG_PID unset or equal to its PID), it sends
// WATCHDOG=1 every half interval while the State is running and live by
// the liveness rule of the Healths built on the State (see
// Health.Liveness: no Critical check fails), and stops sending otherwise,
// so that systemd restarts a wedged instance.
//
// An abandoned hook's goroutine keeps running until the hook returns: a
// hook must honour its context. The process usually exits soon after Done,
// which ends such goroutines.
//
// Set the exported fields before calling any method, and do not change
// them afterwards; the zero value of each field is its default. Creating
// the helper installs nothing: signal handlers exist from Start until the
// shutdown finishes. The zero GracefulShutdown is ready to use: it is
// NewGracefulShutdown(nil), a helper with no lock to release.
type GracefulShutdown struct {
	// Timeout is the overall deadline of the hooks, counted from the end of
	// the drain delay. 0 means 5 seconds. Negative means no overall
	// deadline: the hooks run until they return (each is still bounded by
	// HookTimeout if that is set), and a forced exit by a second signal is
	// then the only way to cut a hook that does not return.
	Timeout time.Duration
	// HookTimeout limits each hook, counted from the hook's call: its
	// context ends HookTimeout after the call, or at the overall deadline
	// if that is sooner. 0 (the default) or negative means no limit of its
	// own: a hook may use all that is left of the overall deadline.
	HookTimeout time.Duration
	// DrainDelay is how long to wait after moving to StatusStopping, before
	// the hooks run (and before the overall deadline starts), so that load
	// balancers see the instance is not ready and stop sending it traffic.
	// 0 (the default) or negative means no wait.
	DrainDelay time.Duration
	// Signals are the signals that start the shutdown; nil means
	// os.Interrupt and syscall.SIGTERM (on Windows, SIGTERM stands for the
	// console close, logoff and shutdown events). An empty non-nil list
	// means none, on every system (on Unix SIGHUP is still handled: see
	// Hangup).
	Signals []os.Signal
	// Hangup, when set, is called on each SIGHUP (Unix) instead of
	// beginning the shutdown: the host's reload hook (re-read its
	// configuration, reopen its log files). Calls run one at a time in a
	// goroutine of their own; a panic is recovered and logged. A SIGHUP that
	// arrives once the shutdown has begun is logged and ignored. When Hangup
	// is nil, or SIGHUP is listed in Signals, SIGHUP begins the shutdown.
	Hangup func()
	// Logger receives one record per step; nil means silent.
	Logger *slog.Logger

	initOnce sync.Once // sets up what follows, for the zero value too

	lk     Mutex
	state  *State
	ctx    context.Context
	cancel context.CancelCauseFunc
	done   chan struct{}
	err    error // set before done is closed

	hangupMu sync.Mutex // one Hangup call at a time

	sd   *sdnotify.Notifier // systemd's notify socket, nil when not under systemd
	sdMu sync.Mutex         // orders the notifications

	mu      sync.Mutex
	hooks   []namedHook
	begun   bool
	results hookResults    // the outcome of each hook run (stats.go)
	started bool           // Start was called
	sigs    chan os.Signal // the channel given to signal.Notify, nil before Start

	// What instancelocktest.Signal needs (shutdown_fake.go), set by Start:
	// the signals given to signal.Notify, and the watcher's channel for the
	// fake ones.
	notified []os.Signal
	fakes    chan fakeSignal
}

type namedHook struct {
	name string
	fn   func(context.Context) error
}

// NewGracefulShutdown returns a helper that releases lk (a *Locker or any
// other Mutex; it may be nil) as the last step of the shutdown. The helper
// owns a State created with NewState(lk.InstanceID()) (a random id when lk
// is nil), in StatusStarting: the host moves it to StatusRunning when it is
// ready to serve. Nothing is installed until Start. It does not fix the
// configuration of a *Locker (see Locker): its fields may be set after.
func NewGracefulShutdown(lk Mutex) *GracefulShutdown {
	g := &GracefulShutdown{lk: nilMutex(lk)}
	g.init()
	return g
}

// init sets up the State, the context and the done channel, once; every
// exported method calls it first, so that the zero value works.
func (g *GracefulShutdown) init() {
	g.initOnce.Do(func() {
		id := ""
		if g.lk != nil {
			id = g.lk.InstanceID()
		}
		g.state = NewState(id)
		g.ctx, g.cancel = context.WithCancelCause(context.Background())
		g.done = make(chan struct{})
	})
}

// State returns the lifecycle State the helper moves to StatusStopping and
// StatusStopped. The host sets StatusRunning itself.
func (g *GracefulShutdown) State() *State {
	g.init()
	return g.state
}

// Add registers a hook named name (the name appears in logs and errors).
// Hooks run in reverse order of Add. A hook added after the shutdown began
// is not run; that is logged. Add panics if hook is nil.
func (g *GracefulShutdown) Add(name string, hook func(context.Context) error) {
	if hook == nil {
		panic("instancelock: GracefulShutdown.Add: nil hook " + name)
	}
	g.init()
	g.mu.Lock()
	begun := g.begun
	if !begun {
		g.hooks = append(g.hooks, namedHook{name, hook})
	}
	g.mu.Unlock()
	if begun {
		g.logger().Warn("shutdown hook added after the shutdown began; it will not run", "hook", name)
	}
}

// Start installs the signal handlers (signal.Notify for Signals, and on
// Unix for SIGHUP and SIGPIPE) and starts watching for what begins a
// shutdown: one of the signals (the cause is a *SignalError), ctx being
// done (the cause is context.Cause(ctx)), or the lock given to
// NewGracefulShutdown being lost (the cause wraps ErrLockLost). It returns
// at once; the handlers are removed and the watching goroutines end when
// the shutdown finishes. Start returns an error, and installs nothing, if
// it was called before or if the shutdown has already begun.
//
// The lock need not be held at Start: every holding is watched, including
// one acquired after Start (the order of a standby that installs its signal
// handling first and then waits in Lock(g.Context())) and one acquired again
// after an Unlock. The helper notices a new holding within 100 ms (it polls
// Lost while started); a holding that is taken and lost within that period
// may go unnoticed. Unlock itself never begins the shutdown.
func (g *GracefulShutdown) Start(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	g.init()
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.started:
		return errors.New("instancelock: GracefulShutdown.Start called twice")
	case g.begun:
		return errors.New("instancelock: GracefulShutdown.Start called after the shutdown began")
	}
	g.started = true
	sigs, hup := g.notifyList()
	notifySIGPIPE()
	// Room for the first and the second signal even if both arrive before
	// the watcher reads.
	g.sigs = make(chan os.Signal, 2)
	if len(sigs) > 0 { // signal.Notify with no signal would relay every one
		signal.Notify(g.sigs, sigs...)
	}
	g.notified, g.fakes = sigs, make(chan fakeSignal)
	g.sdStart()
	if g.lk != nil {
		go g.watchLock(g.lk.Lost())
	}
	go g.watch(ctx, g.sigs, hup)
	return nil
}

// notifyList returns the signals Start hands to signal.Notify: Signals
// (the default ones when nil; none when empty), and on Unix SIGHUP; and
// reload, SIGHUP when it calls Hangup rather than beginning the shutdown
// (nil otherwise).
func (g *GracefulShutdown) notifyList() (sigs []os.Signal, reload os.Signal) {
	sigs = g.Signals
	if sigs == nil {
		sigs = defaultSignals()
	}
	hup := hangupSignal()
	if hup == nil || slices.Contains(sigs, hup) {
		return sigs, nil
	}
	sigs = append(slices.Clip(sigs), hup)
	if g.Hangup == nil {
		return sigs, nil
	}
	return sigs, hup
}

// hangup runs the Hangup hook for one SIGHUP, after any earlier call has
// returned.
func (g *GracefulShutdown) hangup() {
	g.hangupMu.Lock()
	defer g.hangupMu.Unlock()
	log := g.logger()
	defer func() {
		if r := recover(); r != nil {
			log.Error("the Hangup hook panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
	}()
	start := time.Now()
	log.Info("SIGHUP received: running the Hangup hook")
	g.Hangup()
	log.Info("Hangup hook done", "duration", time.Since(start))
}

// watchLock begins the shutdown when a holding of the lock is lost. lost is
// the Lost channel of the holding at Start (nil when not held). Lost is
// read again every lockPoll, so that a holding taken after Start, or taken
// again after an Unlock (the channel of a released holding is never
// closed), is watched too. It returns when the shutdown begins.
func (g *GracefulShutdown) watchLock(lost <-chan struct{}) {
	stop := g.ctx.Done()
	t := time.NewTicker(lockPoll)
	defer t.Stop()
	for {
		select {
		case <-lost:
			err := g.lk.Err()
			if !isCause(err, ErrLockLost) {
				err = ErrLockLost
			}
			g.begin(fmt.Errorf("instancelock: shutting down: %w", err))
			return
		case <-stop:
			return
		case <-t.C:
			lost = g.lk.Lost()
		}
	}
}

// watch begins the shutdown on the first signal or ctx done, and forces
// the exit on the second signal. reload is the signal that calls Hangup
// instead (nil for none). It returns when the shutdown has finished.
func (g *GracefulShutdown) watch(ctx context.Context, sigs <-chan os.Signal, reload os.Signal) {
	ctxDone := ctx.Done()
	received := 0
	for {
		select {
		case sig := <-sigs:
			if g.received(sig, reload, &received) {
				g.force(sig)
			}
		case f := <-g.fakes:
			f.forced <- g.received(f.sig, reload, &received)
		case <-ctxDone:
			ctxDone = nil
			g.begin(context.Cause(ctx))
		case <-g.done:
			return
		}
	}
}

// received decides on a signal the watcher got (received counts them):
// reload calls Hangup, unless the shutdown has begun; the first other
// begins the shutdown; it returns true for a second one, on which the
// process must exit at once.
func (g *GracefulShutdown) received(sig, reload os.Signal, received *int) (force bool) {
	select {
	case <-g.done: // it arrived as the shutdown finished: nothing left to force
		return false
	default:
	}
	if reload != nil && sig == reload {
		if g.ctx.Err() != nil {
			g.logger().Warn("SIGHUP during the shutdown: ignored", "signal", sig.String())
		} else {
			go g.hangup()
		}
		return false
	}
	*received++
	if *received == 1 {
		g.logger().Info("signal received", "signal", sig.String())
		g.begin(&SignalError{Signal: sig})
		return false
	}
	return true
}

// force exits the process at once after a best-effort release of the lock.
func (g *GracefulShutdown) force(sig os.Signal) {
	code := signalExitCode(sig)
	log := g.logger()
	log.Error("second signal during shutdown: exiting now", "signal", sig.String(), "code", code)
	if g.lk != nil {
		released := make(chan error, 1)
		go func() { released <- g.lk.Unlock() }()
		t := time.NewTimer(forceReleaseTimeout)
		select {
		case err := <-released:
			if err != nil {
				log.Error("releasing the lock", "err", err)
			} else {
				log.Info("lock released")
			}
		case <-t.C:
			log.Error("releasing the lock is taking too long; exiting without it", "waited", forceReleaseTimeout)
		}
		t.Stop()
	}
	osExit(code)
}

// Context returns a context that is cancelled when the shutdown begins;
// context.Cause(ctx) then tells why: a *SignalError, the cause given to
// Shutdown (ErrShutdownRequested for nil), the cause of Start's context, or
// an error wrapping ErrLockLost. Pass it to the work the host runs so that
// it stops when the shutdown begins.
func (g *GracefulShutdown) Context() context.Context {
	g.init()
	return g.ctx
}

// Shutdown begins the shutdown with the given cause (nil means
// ErrShutdownRequested), waits until it has finished and returns what Wait
// returns. It is idempotent: if the shutdown has already begun, for any
// reason, Shutdown only waits for it and returns its result, and cause is
// ignored. The cause's methods may panic (a typed nil error): the cause is
// then logged as such, the hooks run all the same and ExitCode is 1.
//
// Called from a hook (in the hook's own goroutine), Shutdown does not wait,
// since the shutdown waits for the hook: it returns at once an error saying
// so, and the shutdown goes on. The same holds for Wait and ExitCode.
func (g *GracefulShutdown) Shutdown(cause error) error {
	if cause == nil {
		cause = ErrShutdownRequested
	}
	g.init()
	g.begin(cause)
	return g.Wait()
}

// Done returns a channel that is closed when the shutdown has finished: the
// hooks ran or were abandoned, the lock is released and the State is
// StatusStopped.
func (g *GracefulShutdown) Done() <-chan struct{} {
	g.init()
	return g.done
}

// Wait blocks until Done is closed and returns the failures of the
// shutdown joined with errors.Join: one *HookError per failed hook, in the
// order the hooks ran, then the error of releasing the lock, if any. It
// returns nil when all succeeded. Called from a hook before the shutdown
// has finished, it returns an error at once instead of waiting for itself.
func (g *GracefulShutdown) Wait() error {
	g.init()
	select {
	case <-g.done:
		return g.err
	default:
	}
	if inHook() {
		g.logger().Warn("Shutdown or Wait called from a shutdown hook: not waiting for the shutdown that runs the hook")
		return errWaitInHook
	}
	<-g.done
	return g.err
}

// errWaitInHook is what Wait (and Shutdown) return when called from a hook:
// waiting there would wait for the hook itself.
var errWaitInHook = errors.New("instancelock: GracefulShutdown.Shutdown or Wait called from a shutdown hook: " +
	"the shutdown is running this hook and cannot finish before it returns; returning without waiting")

// ExitCode waits until Done is closed, then returns the status the process
// should exit with. The rule: a shutdown that was asked for and completed
// cleanly exits 0; anything else exits 1, so that a supervisor restarts the
// instance. Asked for means a signal (*SignalError), Shutdown(nil)
// (ErrShutdownRequested) or Start's context being cancelled
// (context.Canceled). Anything else is caused by an error and exits 1
// even when every hook succeeds: Shutdown(err) with a non-nil err, the loss
// of the lock (ErrLockLost), a cause given to Start's context. A hook that
// fails (Wait returns an error) also exits 1. A forced exit (a second
// signal) never gets here: it exits 128+signal. Called from a hook before
// the shutdown has finished, ExitCode returns 1 at once (see Wait).
func (g *GracefulShutdown) ExitCode() int {
	if g.Wait() != nil || !requested(context.Cause(g.ctx)) {
		return 1
	}
	return 0
}

// requested reports whether a shutdown cause means that the shutdown was
// asked for rather than caused by an error; false when one of the cause's
// methods panics (a typed nil error).
func requested(cause error) (is bool) {
	defer func() {
		if recover() != nil {
			is = false
		}
	}()
	var se *SignalError
	return errors.As(cause, &se) || errors.Is(cause, ErrShutdownRequested) || cause == context.Canceled
}

// logger returns Logger, or a silent one.
func (g *GracefulShutdown) logger() *slog.Logger {
	if g.Logger != nil {
		return g.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// begin starts the shutdown in a new goroutine unless it has begun.
func (g *GracefulShutdown) begin(cause error) {
	g.mu.Lock()
	if g.begun {
		g.mu.Unlock()
		return
	}
	g.begun = true
	hooks := g.hooks
	g.hooks = nil
	g.mu.Unlock()
	// Stopping before the context is cancelled: whoever sees the context
	// done also sees the instance is not ready.
	if err := g.state.Set(StatusStopping); err != nil {
		g.logger().Warn("setting the state", "err", err)
	}
	g.cancel(cause)
	go g.run(cause, hooks)
}
