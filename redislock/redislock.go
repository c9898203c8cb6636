// Package redislock is a fleet-wide instance lock on Redis: a lease that one
// process of a fleet holds at a time, renewed while the process lives, with
// the holder's metadata in the value and a fencing token that grows with
// every new holder.
//
//	lk, err := redislock.Open("redis://127.0.0.1:6379", "orchestrator")
//	if err != nil { log.Fatal(err) }
//	defer lk.Close()
//	lk.Port = 3000 // optional fields, set before the first other call
//	if err := lk.Lock(ctx); err != nil { log.Fatal(err) }
//	// do the singleton work until <-lk.Lost()
//
// A lease is not a lock: see README.md for what is guaranteed and what is
// not. In short: the server must run with maxmemory-policy noeviction; a
// failover, a restart without persistence, a deleted key or a holder paused
// longer than the TTL can let two processes hold the lock at once for a
// moment, and the holder learns of the loss only at its next renewal or
// local deadline. Pass FencingToken to the resource the lock protects, so it
// can refuse the older holder.
//
// *Locker satisfies instancelock.Mutex and instancelock.Fencer, so it can
// be given to instancelock.NewGracefulShutdown and instancelock.NewHealth.
//
// Configuration follows one rule, as for the types of package
// instancelock: what the Locker cannot work without (the client, or a URL,
// and the lock name) are the arguments of [New] and [Open]; everything
// optional is an exported field of [Locker], set after New or Open and
// before the first other method call, and never changed afterwards. The
// zero value of a field means its documented default. A field out of
// range, or a server that may evict the key, makes the first TryLock or
// Lock fail with an error that says which. A Locker not made by New or
// Open (the zero Locker) holds nothing and its TryLock, Lock and Holder
// fail.
package redislock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ad5dec64/instancelock"
	"github.com/redis/go-redis/v9"
)

var (
	_ instancelock.Mutex  = (*Locker)(nil)
	_ instancelock.Fencer = (*Locker)(nil)
)

// defaultTTL is the TTL of a Locker whose TTL field is 0.
const defaultTTL = 10 * time.Second

// MinTTL is the shortest TTL a Locker accepts.
const MinTTL = 50 * time.Millisecond

// checkTimeout bounds the server check of the first acquisition, and the
// subscription of Lock.
const checkTimeout = 5 * time.Second

// Backoff of Lock between two attempts, before jitter.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = 500 * time.Millisecond
)

var (
	// ErrEvictionPolicy is matched by the error of the first TryLock or
	// Lock when the server's maxmemory-policy is not noeviction: under
	// memory pressure the server could evict the lock key and let a second
	// holder in. Locker.AllowEviction turns the error into a logged
	// warning.
	ErrEvictionPolicy = errors.New("the server may evict keys (maxmemory-policy is not noeviction)")
	// ErrLeaseExpired is the cause of a loss (it is wrapped by an error
	// that matches instancelock.ErrLockLost) when the local deadline of the
	// lease passed before a renewal succeeded: the server was unreachable,
	// too slow, or the process was paused.
	ErrLeaseExpired = errors.New("the lease expired before a renewal succeeded")
	// ErrKeyChanged is the cause of a loss when a renewal found the lock
	// key gone (deleted, expired, or lost by a server restart or failover)
	// or holding another holder's value.
	ErrKeyChanged = errors.New("the lock key no longer holds this holder's value")
)

// errLate is the error of an acquisition whose reply came after the lease
// had already run out locally.
var errLate = errors.New("the server answered after the lease had run out")

// Locker is a lease on one Redis key. It is safe for concurrent use. A
// Locker holds the lock at most once at a time: TryLock on a held Locker is
// an error. After Unlock (or a loss followed by Unlock) it may lock again.
//
// While held, the key holds {"token","fence","holder"} (JSON) with a TTL,
// and a goroutine renews the TTL every ttl/3 with a script that first
// checks that the key still holds this holding's value. The lock is lost, and Lost is closed, when a renewal finds
// the key gone or changed, or when the local deadline (the send time of the
// last successful acquisition or renewal, plus the TTL, less 1% and 2 ms
// for clock drift, on the monotonic clock) passes before a renewal
// succeeds; Err and FencingToken compare that deadline at the call.
type Locker struct {
	// TTL is the lease's time to live; 0 means 10 s. The holder renews it
	// every TTL/3; a holder that dies keeps the others out for at most the
	// TTL. A lease cannot go without one: under MinTTL (50ms), or
	// negative, TryLock and Lock fail.
	TTL time.Duration

	// Port is the port the instance serves on, recorded in the holder's
	// metadata. 0 records none; outside 0..65535 TryLock and Lock fail.
	Port int

	// Logger receives the Locker's log records: the loss of the lock
	// (error), failed renewals and doubts about the server (warning), and
	// acquisitions and releases (debug). nil means silent.
	Logger *slog.Logger

	// AllowEviction makes the first TryLock or Lock accept a server whose
	// maxmemory-policy is not noeviction, logging a warning instead of
	// failing with ErrEvictionPolicy. Set it only when the server can
	// never reach its memory limit.
	AllowEviction bool

	client   redis.UniversalClient
	owned    bool // made by Open: Close closes the client
	name     string
	fenceKey string
	desc     string
	id       string

	// The fields as the first TryLock, Lock or Holder found them (setup),
	// with the defaults filled in.
	setupOnce sync.Once
	setupErr  error
	ttl       time.Duration
	port      int
	log       *slog.Logger

	mu      sync.Mutex // serialises TryLock, Unlock and Close
	t       *tenure    // the current holding, nil when not held
	last    atomic.Pointer[tenure]
	closed  bool
	checked bool // the server's maxmemory-policy was checked, under mu
}

// tenure is one holding of the lock.
type tenure struct {
	value string // the key's value, compared by renew
	token string // its token, compared by release
	fence uint64
	lost  chan struct{} // closed on loss
	stop  chan struct{} // closed by Unlock
	done  chan struct{} // closed when the renewer has returned
	err   atomic.Pointer[error]
	// deadline is the lease deadline (monoNow time): the send time of the
	// last successful acquisition or renewal plus lease().
	deadline atomic.Int64
}

// monoBase is the origin of the monotonic lease deadlines.
var monoBase = time.Now()

// mono returns t (a time.Time with a monotonic reading) as monoNow time.
func mono(t time.Time) int64 { return int64(t.Sub(monoBase)) }

// New returns a Locker for the lock called name on the server behind
// client. The key is name itself; the fencing counter is name+":fence"
// (on Redis Cluster, name must contain a hash tag such as "{orchestrator}"
// so that both keys live in one slot; New fails otherwise). New talks to
// no server; the optional fields of the Locker may be set before its first
// other method call.
//
// The first TryLock or Lock checks the server once with CONFIG GET
// maxmemory-policy: it fails with an error matching ErrEvictionPolicy if
// the policy is not noeviction (unless AllowEviction); when the server
// cannot be reached, TryLock fails and Lock waits for it as for the lock.
// If the server refuses CONFIG (managed services, ACLs), the Locker logs
// a warning and goes on. The caller keeps ownership of client: Close does
// not close it.
func New(client redis.UniversalClient, name string) (*Locker, error) {
	switch {
	case client == nil:
		return nil, errors.New("redislock: New: nil client")
	case name == "":
		return nil, errors.New("redislock: New: empty lock name")
	}
	if _, cluster := client.(*redis.ClusterClient); cluster && !hasHashTag(name) {
		return nil, fmt.Errorf("redislock: New: lock name %q has no hash tag: on Redis Cluster use a name such as %q", name, "{"+name+"}")
	}
	self, err := instancelock.Current(0)
	if err != nil {
		return nil, err
	}
	return &Locker{
		client: client, name: name, fenceKey: name + ":fence",
		desc: fmt.Sprintf("redis lock %q", name), id: self.InstanceID,
	}, nil
}

// errNotNew is the error of a Locker that neither New nor Open made.
var errNotNew = errors.New("redislock: the Locker was not made by New or Open: use redislock.New(client, name) or redislock.Open(url, name)")

// setup reads the optional fields once, at the first TryLock, Lock or
// Holder, and fills in their defaults. Its error names a field out of
// range; it stays.
func (l *Locker) setup() error {
	l.setupOnce.Do(func() {
		var bad []error
		if l.client == nil {
			bad = append(bad, errNotNew)
		}
		switch {
		case l.TTL == 0:
			l.ttl = defaultTTL
		case l.TTL < MinTTL:
			bad = append(bad, fmt.Errorf("redislock: Locker.TTL is %v: want at least %v, or 0 for %v", l.TTL, MinTTL, defaultTTL))
		default:
			l.ttl = l.TTL
		}
		if l.Port < 0 || l.Port > 65535 {
			bad = append(bad, fmt.Errorf("redislock: Locker.Port is %d: want 1..65535, or 0 for none", l.Port))
		}
		l.port = l.Port
		log := l.Logger
		if log == nil {
			log = slog.New(slog.DiscardHandler)
		}
		l.log = log.With("lock", l.desc)
		l.setupErr = errors.Join(bad...)
	})
	return l.setupErr
}

// Open is New with a client made from a URL, in the form redis.ParseURL
// reads: redis://[user:password@]host:port[/db][?dial_timeout=3s&…],
// rediss:// for TLS, unix:///path/redis.sock. The client honours context
// deadlines. Close closes it. Like New, Open talks to no server: it fails
// only on a URL it cannot parse and an empty name.
func Open(url, name string) (*Locker, error) {
	o, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redislock: Open: %w", err)
	}
	o.ContextTimeoutEnabled = true
	client := redis.NewClient(o)
	l, err := New(client, name)
	if err != nil {
		client.Close()
		return nil, err
	}
	l.owned = true
	return l, nil
}

// hasHashTag reports whether name has a non-empty {…} section, which Redis
// Cluster hashes instead of the whole key.
func hasHashTag(name string) bool {
	i := strings.IndexByte(name, '{')
	if i < 0 {
		return false
	}
	j := strings.IndexByte(name[i+1:], '}')
	return j > 0
}

// checkServer reads maxmemory-policy, once a check has come through.
// Called with mu held.
func (l *Locker) checkServer(ctx context.Context) error {
	if l.checked {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	m, err := l.client.ConfigGet(ctx, "maxmemory-policy").Result()
	var reply redis.Error
	switch {
	case errors.As(err, &reply):
		l.log.Warn("cannot read the server's maxmemory-policy; it must be noeviction", "err", err)
		l.checked = true
		return nil
	case err != nil:
		return fmt.Errorf("redislock: lock %s: checking the server's maxmemory-policy: %w", l.desc, err)
	}
	policy, ok := m["maxmemory-policy"]
	switch {
	case !ok:
		l.log.Warn("the server did not report its maxmemory-policy; it must be noeviction")
	case policy == "noeviction":
	case l.AllowEviction:
		l.log.Warn("the server may evict the lock key", "maxmemory-policy", policy)
	default:
		return fmt.Errorf("redislock: lock %s: the server's maxmemory-policy is %s (set it to noeviction, or Locker.AllowEviction if the server can never reach its memory limit): %w",
			l.desc, policy, ErrEvictionPolicy)
	}
	l.checked = true
	return nil
}

// Name returns the lock's name, which is its Redis key.
func (l *Locker) Name() string { return l.name }

// InstanceID returns the instance id this Locker writes into the holder's
// metadata. It stays the same across acquisitions by the same Locker.
func (l *Locker) InstanceID() string { return l.id }

// Err returns nil while the lock is held, instancelock.ErrNotHeld when the
// Locker does not hold it (never locked, or unlocked), and an error that
// matches instancelock.ErrLockLost and wraps the cause (ErrKeyChanged,
// ErrLeaseExpired) once the holding was lost; that error stays until the
// next acquisition.
//
// Err compares the lease deadline (see Locker) with the monotonic time of
// the call: a process that resumes after a pause longer than the lease sees
// the loss at its first call, before its renewal timer runs, and the loss
// is then recorded (Lost is closed).
func (l *Locker) Err() error {
	t := l.last.Load()
	if t == nil {
		return instancelock.ErrNotHeld
	}
	return l.errOf(t)
}

// errOf is Err of the holding t.
func (l *Locker) errOf(t *tenure) error {
	if p := t.err.Load(); p != nil {
		return *p
	}
	if over := time.Duration(mono(time.Now()) - t.deadline.Load()); over > 0 {
		l.lose(t, fmt.Errorf("%w: the lease ran out %v ago (the process was paused, or no renewal answered)", ErrLeaseExpired, over.Round(time.Millisecond)))
		return *t.err.Load()
	}
	return nil
}

// Lost returns a channel that is closed when the held lock is lost. The
// holder must then stop the work the lock protects: another process may
// already hold the lock. The channel belongs to the current holding; it is
// nil when the lock is not held, and it is not closed by Unlock.
func (l *Locker) Lost() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.t == nil {
		return nil
	}
	return l.t.lost
}

// FencingToken returns the fencing token of the current holding and true,
// or 0 and false when the lock is not held or was lost, including a lease
// deadline passed at the time of the call (see Err). Tokens strictly
// increase from one holding to the next, across processes, as long as the
// counter key name+":fence" survives; when it does not (a restart without
// persistence, a failover before replication), the next token is at least
// the server's time in microseconds, so tokens keep growing as long as the
// server's clock does not go back.
func (l *Locker) FencingToken() (uint64, bool) {
	l.mu.Lock()
	t := l.t
	l.mu.Unlock()
	if t == nil || l.errOf(t) != nil {
		return 0, false
	}
	return t.fence, true
}

// TryLock acquires the lock with one attempt, without waiting. When another
// process holds it, the error is an *instancelock.AlreadyRunningError
// (matching instancelock.ErrAlreadyRunning) naming the holder read from the
// key in the same atomic step. Other errors come from the server or the
// network. TryLock on a Locker that holds the lock is an error, and so are
// a field out of range and, at the first acquisition, a server that may
// evict keys (see New).
func (l *Locker) TryLock() error {
	if err := l.setup(); err != nil {
		return err
	}
	_, err := l.attempt(context.Background())
	return err
}

// Lock acquires the lock, waiting while another process holds it, until
// ctx is done; it then returns context.Cause(ctx) joined with the last
// error.
//
// It subscribes to the lock's release channel (name+":released", on which
// Unlock publishes) before it tries, and tries again the moment a release
// is published, so a released lock changes hands within a round trip or
// two. Between releases it also polls, with a backoff from 50 ms to 500 ms
// with jitter, never sleeping past the moment the holder's key would
// expire: a holder that died (its key expires, nothing is published), a
// lost message, or a server without pub/sub still hand over. Network
// errors and the server's transient replies (LOADING, READONLY,
// MASTERDOWN, TRYAGAIN, CLUSTERDOWN) do not end the wait, so waiters ride
// out a server restart; other errors do, among them a field out of range
// and a server that may evict keys (see New).
func (l *Locker) Lock(ctx context.Context) error {
	if err := l.setup(); err != nil {
		return err
	}
	released, unsubscribe := l.subscribe(ctx)
	defer unsubscribe()
	backoff := minBackoff
	var last error
	for {
		expiresIn, err := l.attempt(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			// An attempt cut short by ctx says nothing new.
			if last == nil || !(errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
				last = err
			}
			return errors.Join(context.Cause(ctx), last)
		}
		if !errors.Is(err, instancelock.ErrAlreadyRunning) {
			if !transient(err) {
				return err
			}
			l.log.Warn("cannot reach the lock; retrying", "err", err)
		}
		last = err
		d := backoff/2 + mrand.N(backoff/2+1)
		if expiresIn > 0 && expiresIn < d {
			d = expiresIn + time.Millisecond
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-released:
		}
		t.Stop()
		backoff = min(2*backoff, maxBackoff)
	}
}

// subscribe subscribes to the release channel of the lock and returns the
// channel of its messages and how to unsubscribe. When the subscription
// cannot be confirmed (the server is down, pub/sub is not allowed), the
// channel is nil and Lock only polls.
func (l *Locker) subscribe(ctx context.Context) (<-chan *redis.Message, func()) {
	ps := l.client.Subscribe(ctx, l.releasedChannel())
	sctx, cancel := context.WithTimeout(ctx, checkTimeout)
	_, err := ps.Receive(sctx) // the subscription's confirmation
	cancel()
	if err != nil {
		ps.Close()
		l.log.Debug("cannot subscribe to the release channel; polling only", "err", err)
		return nil, func() {}
	}
	return ps.Channel(redis.WithChannelSize(1)), func() { ps.Close() }
}

// releasedChannel is the pub/sub channel on which a release is published.
func (l *Locker) releasedChannel() string { return l.name + ":released" }

// transient reports whether err may go away by itself: a network error, or
// one of the replies a server gives while it starts or fails over.
func transient(err error) bool {
	var ne net.Error
	var reply redis.Error
	switch {
	case errors.Is(err, redis.ErrClosed):
		return false
	case errors.Is(err, errLate), errors.As(err, &ne), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return true
	case errors.As(err, &reply):
		for _, p := range []string{"LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN"} {
			if redis.HasErrorPrefix(err, p) {
				return true
			}
		}
	}
	return false
}

// attempt runs the acquire script once. On ErrAlreadyRunning it also
// returns how long the holder's key has left to live (0 if unknown).
func (l *Locker) attempt(ctx context.Context) (time.Duration, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.t != nil {
		return 0, fmt.Errorf("redislock: TryLock %s: %w", l.desc, instancelock.ErrAlreadyHeld)
	}
	if err := l.checkServer(ctx); err != nil {
		return 0, err
	}
	info, err := instancelock.Current(l.port)
	if err != nil {
		return 0, err
	}
	info.InstanceID = l.id
	holder, err := json.Marshal(info)
	if err != nil {
		return 0, err
	}
	var b [16]byte
	rand.Read(b[:])
	token := hex.EncodeToString(b[:])

	sent := time.Now() // the lease is measured from before the request
	res, err := acquireScript.Run(ctx, l.client, []string{l.name, l.fenceKey},
		token, holder, l.ttl.Milliseconds()).Slice()
	if err != nil {
		var reply redis.Error
		if !errors.As(err, &reply) {
			// The script may have run and set the key, with the reply
			// lost: delete it, or it would keep the others out for a TTL.
			l.release(token)
		}
		return 0, fmt.Errorf("redislock: lock %s: %w", l.desc, err)
	}
	won, value, pttl, err := parseReply(res)
	if err != nil {
		return 0, fmt.Errorf("redislock: lock %s: %w", l.desc, err)
	}
	v, verr := parseValue(value)
	// A reply lost on the way back makes the client send the script again,
	// which then finds our own value: that is a win.
	if !won && (verr != nil || v.token != token) {
		are := &instancelock.AlreadyRunningError{Path: l.desc, Holder: v.holder,
			Reason: fmt.Sprintf("the key expires in %v unless its holder renews it", time.Duration(pttl)*time.Millisecond)}
		if verr != nil {
			are.Reason = "the key holds a value this package did not write: " + verr.Error()
		}
		return time.Duration(max(pttl, 0)) * time.Millisecond, are
	}
	if verr != nil {
		l.release(token)
		return 0, fmt.Errorf("redislock: lock %s: %w", l.desc, verr)
	}
	if time.Since(sent) >= l.lease() {
		l.release(token)
		return 0, fmt.Errorf("redislock: lock %s: %w (round trip %v, TTL %v)", l.desc, errLate, time.Since(sent), l.ttl)
	}
	t := &tenure{value: value, token: token, fence: v.fence,
		lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	t.deadline.Store(mono(sent.Add(l.lease())))
	l.t = t
	l.last.Store(t)
	l.log.Debug("lock acquired", "fence", v.fence, "instanceId", l.id)
	go l.keepAlive(t, sent)
	return 0, nil
}

// lease is how long a lease is trusted after the request that set it was
// sent: the TTL less 1% and 2 ms for the drift between the clocks.
func (l *Locker) lease() time.Duration { return l.ttl - l.ttl/100 - 2*time.Millisecond }

// keepAlive renews the lease every ttl/3 (sooner after a failed renewal)
// and reports the loss. It returns on Unlock or on loss, without waiting
// for a renewal in flight (which ends by itself, within the client's
// timeouts).
func (l *Locker) keepAlive(t *tenure, sent time.Time) {
	defer close(t.done)
	deadline := sent.Add(l.lease())
	expire := time.NewTimer(time.Until(deadline))
	defer expire.Stop()
	tick := time.NewTimer(time.Until(sent.Add(l.ttl / 3)))
	defer tick.Stop()
	var lastErr error
	expired := func() error {
		if lastErr == nil {
			return fmt.Errorf("%w: no renewal answered within %v", ErrLeaseExpired, l.lease())
		}
		return fmt.Errorf("%w: last renewal error: %w", ErrLeaseExpired, lastErr)
	}
	for {
		select {
		case <-t.stop:
			return
		case <-t.lost: // found by Err or FencingToken
			return
		case <-expire.C:
			l.lose(t, expired())
			return
		case <-tick.C:
		}
		sent := time.Now()
		if !sent.Before(deadline) {
			l.lose(t, expired())
			return
		}
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		res := make(chan error, 1)
		go func() { res <- l.renew(ctx, t.value) }()
		select {
		case <-t.stop:
			cancel()
			return
		case <-t.lost:
			cancel()
			return
		case <-expire.C:
			cancel()
			l.lose(t, expired())
			return
		case err := <-res:
			cancel()
			switch {
			case err == nil && time.Now().Before(deadline):
				lastErr = nil
				deadline = sent.Add(l.lease())
				t.deadline.Store(mono(deadline))
				expire.Reset(time.Until(deadline))
				tick.Reset(time.Until(sent.Add(l.ttl / 3)))
			case err == nil:
				l.lose(t, expired())
				return
			case errors.Is(err, ErrKeyChanged):
				l.lose(t, err)
				return
			default:
				lastErr = err
				l.log.Warn("lease renewal failed; retrying", "err", err, "leaseLeft", time.Until(deadline))
				tick.Reset(max(l.ttl/10, 5*time.Millisecond))
			}
		}
	}
}

// renew runs the renew script once.
func (l *Locker) renew(ctx context.Context, value string) error {
	n, err := renewScript.Run(ctx, l.client, []string{l.name}, value, l.ttl.Milliseconds()).Int64()
	switch {
	case err != nil:
		return err
	case n == 1:
		return nil
	}
	cur, err := l.client.Get(ctx, l.name).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return fmt.Errorf("%w: the key is gone (deleted, expired, or lost by a server restart or failover)", ErrKeyChanged)
	case err == nil:
		if v, err := parseValue(cur); err == nil {
			return fmt.Errorf("%w: the key now names %s (fence %d)", ErrKeyChanged, v.holder, v.fence)
		}
	}
	return fmt.Errorf("%w: the key holds another value", ErrKeyChanged)
}

// lose records the loss of t, once.
func (l *Locker) lose(t *tenure, cause error) {
	var err error = &lostError{desc: l.desc, cause: cause}
	if !t.err.CompareAndSwap(nil, &err) {
		return
	}
	close(t.lost)
	l.log.Error("lock lost: another instance may hold it now", "err", cause, "fence", t.fence)
}

// lostError is the error of a lost holding. It matches
// instancelock.ErrLockLost and unwraps to the cause.
type lostError struct {
	desc  string
	cause error
}

func (e *lostError) Error() string        { return fmt.Sprintf("redislock: %s lost: %v", e.desc, e.cause) }
func (e *lostError) Unwrap() error        { return e.cause }
func (e *lostError) Is(target error) bool { return target == instancelock.ErrLockLost }

// Unlock releases the lock: it stops the renewals and deletes the key if it
// still holds this holding's value (a script compares and deletes
// atomically, so another holder's key is never touched). Unlock on a
// Locker that does not hold the lock returns nil, so it may be deferred and
// also called on shutdown. After a loss it returns nil too. The error,
// if any, is the server's or the network's: the lock is released locally
// anyway, and the key expires by itself within the TTL.
func (l *Locker) Unlock() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.unlock()
}

func (l *Locker) unlock() error {
	t := l.t
	if t == nil {
		return nil
	}
	close(t.stop)
	<-t.done
	l.t = nil
	e := instancelock.ErrNotHeld
	lost := !t.err.CompareAndSwap(nil, &e)
	err := l.release(t.token)
	l.log.Debug("lock released", "fence", t.fence, "err", err)
	if lost {
		return nil
	}
	if err != nil {
		return fmt.Errorf("redislock: unlock %s: %w", l.desc, err)
	}
	return nil
}

// release deletes the key if it holds the holding with this token,
// waiting at most the TTL (after which the key has expired anyway).
func (l *Locker) release(token string) error {
	ctx, cancel := context.WithTimeout(context.Background(), l.ttl)
	defer cancel()
	return releaseScript.Run(ctx, l.client, []string{l.name}, tokenPrefix(token), l.releasedChannel()).Err()
}

// tokenPrefix is how every value of the holding with this token begins.
func tokenPrefix(token string) string { return `{"token":"` + token + `"` }

// Close releases the lock like Unlock and, for a Locker made by Open,
// closes the client. The Locker cannot be locked again after Close of an
// Open'ed Locker. A second call returns nil.
func (l *Locker) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	err := l.unlock()
	if l.owned && !l.closed {
		l.closed = true
		if cerr := l.client.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("redislock: close %s: %w", l.desc, cerr))
		}
	}
	return err
}

// Holder reads the lock key and returns the holder's metadata. The error
// matches instancelock.ErrNotRunning when nobody holds the lock, and
// instancelock.ErrInvalidLock when the key holds something this package did
// not write; other errors come from the server or the network.
func (l *Locker) Holder() (instancelock.ProcessLock, error) {
	if l.setup(); l.client == nil { // the fields' errors are TryLock's and Lock's
		return instancelock.ProcessLock{}, errNotNew
	}
	v, err := l.read(context.Background())
	return v.holder, err
}

func (l *Locker) read(ctx context.Context) (value, error) {
	s, err := l.client.Get(ctx, l.name).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return value{}, fmt.Errorf("redislock: %s: %w", l.desc, instancelock.ErrNotRunning)
	case err != nil:
		return value{}, fmt.Errorf("redislock: %s: %w", l.desc, err)
	}
	v, err := parseValue(s)
	if err != nil {
		return value{}, fmt.Errorf("redislock: %s: %w", l.desc, err)
	}
	return v, nil
}

// value is a parsed lock value.
type value struct {
	token  string
	fence  uint64
	holder instancelock.ProcessLock
}

// maxValue bounds the value that is parsed.
const maxValue = 64 << 10

// parseValue parses the key's JSON. Errors match
// instancelock.ErrInvalidLock.
func parseValue(s string) (value, error) {
	if len(s) > maxValue {
		return value{}, fmt.Errorf("%w: %d bytes is over the %d-byte limit", instancelock.ErrInvalidLock, len(s), maxValue)
	}
	var w struct {
		Token  string          `json:"token"`
		Fence  json.Number     `json:"fence"`
		Holder json.RawMessage `json:"holder"`
	}
	if err := json.Unmarshal([]byte(s), &w); err != nil {
		return value{}, fmt.Errorf("%w: %v", instancelock.ErrInvalidLock, err)
	}
	if w.Token == "" || w.Holder == nil {
		return value{}, fmt.Errorf("%w: token or holder missing", instancelock.ErrInvalidLock)
	}
	fence, err := strconv.ParseUint(string(w.Fence), 10, 64)
	if err != nil {
		return value{}, fmt.Errorf("%w: fence %q is not an unsigned integer", instancelock.ErrInvalidLock, w.Fence)
	}
	pl, err := instancelock.ParseProcessLock(w.Holder)
	if err != nil {
		return value{}, err
	}
	return value{token: w.Token, fence: fence, holder: pl}, nil
}

// parseReply parses the acquire script's reply {won, value, pttl}.
func parseReply(res []any) (won bool, value string, pttl int64, err error) {
	if len(res) != 3 {
		return false, "", 0, fmt.Errorf("unexpected reply %v from the acquire script", res)
	}
	n, ok1 := res[0].(int64)
	value, ok2 := res[1].(string)
	pttl, ok3 := res[2].(int64)
	if !ok1 || !ok2 || !ok3 {
		return false, "", 0, fmt.Errorf("unexpected reply %v from the acquire script", res)
	}
	return n == 1, value, pttl, nil
}
