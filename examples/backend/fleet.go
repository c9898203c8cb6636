package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ad5dec64/instancelock"
	"github.com/ad5dec64/instancelock/pglock"
	"github.com/ad5dec64/instancelock/redislock"
	"github.com/redis/go-redis/v9"
)

// lockName is the name of the fleet lock: the PostgreSQL advisory lock
// key is derived from it (pglock.Key), and it is the Redis key.
const lockName = "orchestrator"

// fleetLock is what the backend needs of a fleet-wide lock:
// *pglock.Locker and *redislock.Locker.
type fleetLock interface {
	instancelock.Mutex
	instancelock.Fencer
}

var (
	_ fleetLock = (*pglock.Locker)(nil)
	_ fleetLock = (*redislock.Locker)(nil)
)

// lockSpec is a parsed -lock URL: a description for logs and messages
// (without the password), and how to get the Locker.
type lockSpec struct {
	desc string
	open func() (fleetLock, error)
}

// lockScheme returns "postgres" or "redis" for the URL schemes of -lock,
// "" for anything else.
func lockScheme(rawURL string) string {
	scheme, _, ok := strings.Cut(rawURL, "://")
	if !ok {
		return ""
	}
	switch strings.ToLower(scheme) {
	case "postgres", "postgresql":
		return "postgres"
	case "redis", "rediss":
		return "redis"
	}
	return ""
}

// redactURL returns rawURL with its password replaced by "xxxxx", for
// logs; "" when it is not a URL.
func redactURL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return ""
	}
	return u.Redacted()
}

// newLockSpec checks cfg.Lock (its scheme was checked by parseConfig) and
// returns how to open it. Nothing is connected: pglock.New and
// redislock.Open connect to nothing (a Redis Locker, which owns its
// client, is opened by the Fleet, which closes it); the Fleet's first
// round trip is Holder, and the first Lock checks the server. It fails
// when the URL cannot be parsed.
func newLockSpec(cfg config, log *slog.Logger) (lockSpec, error) {
	redacted := redactURL(cfg.Lock)
	switch lockScheme(cfg.Lock) {
	case "postgres":
		lk, err := pglock.New(cfg.Lock, lockName)
		if err != nil {
			return lockSpec{}, fmt.Errorf("invalid -lock %s: %v", redacted, err)
		}
		lk.Port, lk.Logger = cfg.Port, log
		return lockSpec{
			desc: fmt.Sprintf("postgres lock %q at %s", lockName, redacted),
			open: func() (fleetLock, error) { return lk, nil },
		}, nil
	case "redis":
		if _, err := redis.ParseURL(cfg.Lock); err != nil {
			return lockSpec{}, fmt.Errorf("invalid -lock %s: %v", redacted, err)
		}
		redis.SetLogger(redisLogger{log})
		return lockSpec{
			desc: fmt.Sprintf("redis lock %q at %s", lockName, redacted),
			open: func() (fleetLock, error) {
				lk, err := redislock.Open(cfg.Lock, lockName)
				if err != nil {
					return nil, err
				}
				lk.Port, lk.TTL, lk.Logger = cfg.Port, cfg.LockTTL, log // -lock-ttl 0: redislock's 10 s
				return lk, nil
			},
		}, nil
	}
	return lockSpec{}, fmt.Errorf("invalid -lock: want a postgres:// or redis:// URL")
}

// redisLogger sends the Redis client's own log lines (dial failures while
// the server is down) to the backend's log at debug level: the Fleet logs
// the failures that matter.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "redis client: "+fmt.Sprintf(format, v...))
}

// Retry delays of the Fleet while the lock's server cannot be reached, and
// the bound on stopping the agents after a loss.
const (
	retryMin      = 100 * time.Millisecond
	retryMax      = 5 * time.Second
	demoteTimeout = 5 * time.Second
)

// Fleet makes this instance one member of a fleet in which only the holder
// of the fleet lock runs agents. The loop that Start runs waits for the
// lock; once held, it promotes the orchestrator with the holding's fencing
// token; when the lock is lost it demotes the orchestrator at once (every
// agent is cancelled and waited for, so nothing more is written with the
// old token) and waits for the lock again. While the lock's server cannot
// be reached, it retries with a growing delay (up to 5 s), and the
// instance serves HTTP all along.
//
// Release, the "release fleet lock" shutdown hook, waits for the loop to
// end and releases the lock; it is registered so that it runs after the
// agents stopped.
type Fleet struct {
	spec   lockSpec
	orch   *Orchestrator
	agents int // agents started on each promotion
	log    *slog.Logger

	active atomic.Bool   // holding the lock with agents promoted
	fence  atomic.Uint64 // the fencing token while active, else 0

	mu       sync.Mutex
	lk       fleetLock // nil until opened
	lastErr  error     // why the last attempt to open or lock failed; nil after a success
	started  bool      // Start was called
	released bool      // Release was called
	done     chan struct{}

	tried     chan struct{} // closed when the first attempt to reach the lock's server has ended
	triedOnce sync.Once
	reached   bool // the lock's server answered once (run's own state)
}

// NewFleet returns a Fleet over spec's lock that promotes orch with agents
// new agents; log nil discards its logs. It makes orch a standby until the
// lock is held.
func NewFleet(spec lockSpec, orch *Orchestrator, agents int, log *slog.Logger) *Fleet {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	orch.Demote(context.Background()) // no agent runs yet: nothing to wait for
	return &Fleet{spec: spec, orch: orch, agents: agents, log: log.With("lock", spec.desc),
		done: make(chan struct{}), tried: make(chan struct{})}
}

// Start runs the Fleet in a goroutine until ctx is done. A second call, or
// a call after Release, does nothing.
func (f *Fleet) Start(ctx context.Context) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.started || f.released {
		return
	}
	f.started = true
	go f.run(ctx)
}

func (f *Fleet) run(ctx context.Context) {
	defer close(f.done)
	delay := retryMin
	waiting := false // "standby" was logged for this wait
	for {
		lk, err := f.connect(ctx)
		if err == nil && !f.reached {
			// Opening a Locker does not talk to the server (pglock.New
			// and redislock.Open connect to nothing): the first attempt
			// ends with a real round trip, so that readiness and the
			// health check tell the truth from the start.
			if _, err = lk.Holder(); errors.Is(err, instancelock.ErrNotRunning) {
				err = nil
			}
			f.reached = err == nil
		}
		if err != nil {
			f.setErr(err)
		}
		f.triedOnce.Do(func() { close(f.tried) })
		if err == nil {
			if !waiting {
				f.log.Info("orchestrator standby: waiting for the fleet lock")
				waiting = true
			}
			err = lk.Lock(ctx)
		}
		if ctx.Err() != nil {
			return // the shutdown began; Release unlocks if Lock won meanwhile
		}
		if err != nil {
			f.setErr(err)
			f.log.Warn("fleet lock unavailable; retrying", "in", delay, "err", err)
			if !sleep(ctx, delay) {
				return
			}
			delay = min(2*delay, retryMax)
			continue
		}
		f.setErr(nil)
		delay, waiting = retryMin, false
		if !f.lead(ctx, lk) {
			return
		}
	}
}

// lead runs the agents while lk is held. It returns false when ctx is done
// (the shutdown stops the agents, then Release unlocks) and true after a
// loss, once the agents have stopped and the lock is released locally.
func (f *Fleet) lead(ctx context.Context, lk fleetLock) bool {
	fence, ok := lk.FencingToken()
	lost := lk.Lost()
	if ok && lost != nil {
		f.log.Info("orchestrator active", "fence", fence, "agents", f.agents)
		f.fence.Store(fence)
		f.active.Store(true)
		if err := f.orch.Promote(fence, f.agents); err != nil {
			return false // errStopping: the shutdown began; Release unlocks
		}
		select {
		case <-ctx.Done():
			return false
		case <-lost:
		}
	}
	// The lock is lost: another instance may hold it now. Stop writing at
	// once: Demote returns when every agent has returned, so nothing is
	// written with this token afterwards.
	f.active.Store(false)
	f.fence.Store(0)
	f.log.Warn("fleet lock lost: stopping the agents", "fence", fence, "err", lk.Err())
	sctx, cancel := context.WithTimeout(context.Background(), demoteTimeout)
	err := f.orch.Demote(sctx)
	cancel()
	if err != nil {
		f.log.Error("agents did not stop after the loss of the fleet lock", "err", err)
	} else {
		f.log.Info("agents stopped after the loss of the fleet lock", "fence", fence)
	}
	if err := lk.Unlock(); err != nil {
		f.log.Warn("releasing the lost fleet lock", "err", err)
	}
	return true
}

// connect returns the Locker, opening it on first use. An open that is
// still running when ctx is done is abandoned (its Locker is closed when it
// returns).
func (f *Fleet) connect(ctx context.Context) (fleetLock, error) {
	f.mu.Lock()
	lk := f.lk
	f.mu.Unlock()
	if lk != nil {
		return lk, nil
	}
	type result struct {
		lk  fleetLock
		err error
	}
	ch := make(chan result, 1)
	go func() {
		lk, err := f.spec.open()
		ch <- result{lk, err}
	}()
	select {
	case r := <-ch:
		f.mu.Lock()
		f.lk, f.lastErr = r.lk, r.err
		f.mu.Unlock()
		return r.lk, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.lk != nil {
				closeLock(r.lk)
			}
		}()
		return nil, context.Cause(ctx)
	}
}

// WaitFirstAttempt waits until the first attempt to reach the lock's
// server (open the Locker and read the holder) has ended, successfully or
// not, or ctx is done. Startup calls it before it reports ready, so that
// from then on the fleetLock check reports what that attempt found, never
// a "not connected yet" of a client that has not tried.
func (f *Fleet) WaitFirstAttempt(ctx context.Context) error {
	select {
	case <-f.tried:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (f *Fleet) setErr(err error) {
	f.mu.Lock()
	f.lastErr = err
	f.mu.Unlock()
}

// closeLock releases lk and, for a Locker that owns a client (redislock.Open),
// closes it.
func closeLock(lk fleetLock) error {
	if c, ok := lk.(io.Closer); ok {
		return c.Close()
	}
	return lk.Unlock()
}

// sleep waits d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Release is the "release fleet lock" shutdown hook. It waits for the loop
// that Start runs to end (it ends once the shutdown has cancelled its
// context, or by itself when the orchestrator refuses to lead), then
// releases the fleet lock if held and closes its connection. Registered
// before the "stop agents" hook, it runs after it: the lock is released
// only once no agent writes. A second call returns nil.
func (f *Fleet) Release(ctx context.Context) error {
	f.mu.Lock()
	started, released := f.started, f.released
	f.released = true
	f.mu.Unlock()
	if released {
		return nil
	}
	if started {
		select {
		case <-f.done:
		case <-ctx.Done():
			return fmt.Errorf("the fleet lock loop did not stop: %w", context.Cause(ctx))
		}
	}
	f.active.Store(false)
	f.fence.Store(0)
	f.mu.Lock()
	lk := f.lk
	f.mu.Unlock()
	if lk == nil {
		return nil
	}
	held := lk.Err() == nil
	if err := closeLock(lk); err != nil {
		return err
	}
	if held {
		f.log.Info("fleet lock released")
	}
	return nil
}

// Active returns 1 while this instance holds the fleet lock and runs the
// agents, 0 otherwise: the orchestratorActive counter of /api/health.
func (f *Fleet) Active() int {
	if f.active.Load() {
		return 1
	}
	return 0
}

// Fence returns the fencing token of the current holding, 0 when not
// active: the fenceToken counter of /api/health.
func (f *Fleet) Fence() int { return int(f.fence.Load()) }

// errNotConnected is the check's error before the lock was first opened.
var errNotConnected = errors.New("not connected yet")

// Check tells whether the fleet lock's server answers: the fleetLock check
// of /api/health (Optional: a standby that cannot reach it still serves).
// The holder passes while its keep-alive or renewals succeed; a standby
// reads the current holder.
func (f *Fleet) Check(ctx context.Context) error {
	f.mu.Lock()
	started := f.started
	f.mu.Unlock()
	if started {
		// Right after startup: wait for the first attempt to open the lock
		// rather than report it unreachable.
		select {
		case <-f.tried:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	f.mu.Lock()
	lk, err := f.lk, f.lastErr
	f.mu.Unlock()
	if lk == nil {
		if err == nil {
			err = errNotConnected
		}
		return err
	}
	if lk.Err() == nil {
		return nil
	}
	_, err = lk.Holder()
	if err == nil || errors.Is(err, instancelock.ErrNotRunning) {
		return nil
	}
	return err
}

// fleetStatus is the answer of GET /api/fleet.
type fleetStatus struct {
	Lock       string                    `json:"lock"`
	Active     bool                      `json:"active"`               // this instance holds the lock and runs the agents
	FenceToken uint64                    `json:"fenceToken,omitempty"` // while active
	Holder     *instancelock.ProcessLock `json:"holder,omitempty"`     // who holds the lock, read from its server
	Error      string                    `json:"error,omitempty"`      // why the holder could not be read
}

// Status returns who holds the fleet lock, read from its server.
func (f *Fleet) Status() fleetStatus {
	st := fleetStatus{Lock: f.spec.desc, Active: f.active.Load(), FenceToken: f.fence.Load()}
	f.mu.Lock()
	lk, err := f.lk, f.lastErr
	f.mu.Unlock()
	if lk == nil {
		if err == nil {
			err = errNotConnected
		}
		st.Error = err.Error()
		return st
	}
	h, err := lk.Holder()
	if err == nil {
		_, err = h.MarshalJSON() // what the answer needs of it
	}
	switch {
	case err == nil:
		st.Holder = &h
	case !errors.Is(err, instancelock.ErrNotRunning):
		st.Error = err.Error()
	}
	return st
}
