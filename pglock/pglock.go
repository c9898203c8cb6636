// Package pglock is an instance lock for a fleet: a PostgreSQL session
// advisory lock that one process of many, on any number of hosts, holds at
// a time, so that only one replica of a backend does the singleton work.
//
//	lk, err := pglock.New("postgres://app@db.internal/app", "orchestrator")
//	if err != nil { log.Fatal(err) }
//	lk.Port = 3000 // optional fields, set before the first other call
//	if err := lk.Lock(ctx); err != nil { log.Fatal(err) } // waits for the holder to go
//	defer lk.Unlock()
//	// ... work until <-lk.Lost() ...
//
// The lock is pg_try_advisory_lock on a 64-bit key derived from the lock
// name (see [Key]), taken on a connection of its own that the Locker opens
// when it acquires the lock and closes when it releases or loses it. A
// session lock dies with its session: when the holding process dies, the
// kernel closes its socket, the server ends the session and frees the lock
// at once.
//
// While it holds the lock, the Locker checks every keep-alive interval that
// its session still holds it (pg_locks for pg_backend_pid()), and closes
// [Locker.Lost] when it does not or the server does not answer in time. A
// row of the table [Table], written by the holding session, carries the
// holder's [instancelock.ProcessLock] and a fencing epoch that grows with
// every new holder ([Locker.FencingToken]).
//
// A Locker satisfies [instancelock.Mutex] and [instancelock.Fencer], so it
// works with instancelock.GracefulShutdown and instancelock.Health.
//
// Never connect through a transaction-mode pooler (PgBouncer
// pool_mode=transaction): session locks do not survive it. The Locker
// detects it and fails with [ErrTransactionPooler].
//
// Configuration follows one rule, as for the types of package
// instancelock: what the Locker cannot work without (the connection string
// and the lock name) are the arguments of [New]; everything optional is an
// exported field of [Locker], set after New and before the first other
// method call, and never changed afterwards. The zero value of a field
// means its documented default; a negative duration means no limit where
// its comment says so. A field out of range makes the first TryLock or
// Lock fail with an error that names it. A Locker not made by New (the
// zero Locker) holds nothing and its TryLock, Lock and Holder fail.
package pglock

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ad5dec64/instancelock"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Table is the table, in the connection's default schema (search_path),
// where holders publish their metadata and fencing epoch. A Locker creates
// it when it first acquires a lock and the table is missing. Do not delete
// its rows: the epoch of a name would restart at 1.
const Table = "instancelock_holders"

// Defaults of the fields of Locker.
const (
	defaultKeepAlive = time.Second
	defaultTimeout   = 10 * time.Second
	minKeepAlive     = 10 * time.Millisecond
)

// Retry delays of Lock while the server cannot be reached: the first,
// and the longest.
const (
	retryMin = 50 * time.Millisecond
	retryMax = 2 * time.Second
)

// blockFor bounds one blocking wait in pg_advisory_lock: Lock then opens a
// new connection and waits again, so that a waiter whose server vanished
// without a word (a partition) notices within this time.
const blockFor = time.Minute

// maxSettle caps the time an acquirer waits for the previous holder to
// notice its loss, whatever the previous holder's row says.
const maxSettle = time.Minute

// ErrTransactionPooler is matched by the error of an acquisition (and by
// the cause of a loss) when the connection does not have a server session
// of its own: it goes through a transaction- or statement-mode pooler
// (PgBouncer pool_mode=transaction or statement), which hands one server
// session to several clients, or a proxy that moves clients between server
// sessions. Session locks cannot work there (advisory locks are re-entrant
// within a session, so two clients of one server session would both hold
// it); the Locker finds out with session markers before it takes the lock.
// Connect to PostgreSQL directly or through a session-mode pool.
var ErrTransactionPooler = errors.New("pglock: the connection has no server session of its own: " +
	"it goes through a transaction- or statement-mode pooler (PgBouncer pool_mode=transaction) or a proxy that moves sessions; " +
	"connect to PostgreSQL directly or through a session-mode pool")

// ErrLeaseExpired is the cause of a loss (wrapped by an error that matches
// instancelock.ErrLockLost) when no keep-alive check confirmed the lock
// within 90% of the keep-alive interval: the process was paused (SIGSTOP,
// a frozen VM, a long GC pause) or the server answered too slowly. A
// successor that took over meanwhile may already act; Err and
// FencingToken report this at the moment they are called.
var ErrLeaseExpired = errors.New("the lease ran out before a keep-alive check confirmed the lock")

// Key returns the advisory lock key of a lock name: the first 8 bytes of
// the SHA-256 of the name, read as a big-endian int64. Other code of the
// same database must not use this key for its own advisory locks.
func Key(name string) int64 {
	sum := sha256.Sum256([]byte(name))
	return int64(binary.BigEndian.Uint64(sum[:8]))
}

// Locker is a fleet-wide instance lock on one name in one PostgreSQL
// database. It is safe for concurrent use. A Locker holds the lock at most
// once: TryLock on a held Locker is an error.
type Locker struct {
	// Port is the port the instance serves on, recorded in the holder's
	// ProcessLock. 0 records none; outside 0..65535 TryLock and Lock fail.
	Port int

	// KeepAlive is the keep-alive interval; 0 means 1 s. A holder checks
	// every third of the interval that its session still holds the lock;
	// its lease deadline is 90% of the interval after the last check that
	// confirmed it, so it learns of a loss at most one interval after the
	// loss. The interval
	// is published with the holder: a Locker that takes over from a holder
	// that did not Unlock, and may still be alive, waits that holder's
	// interval before TryLock or Lock returns. A holder cannot go without
	// checks: a negative value, or one under 10ms, makes TryLock and Lock
	// fail.
	KeepAlive time.Duration

	// Timeout bounds connecting and each statement the Locker runs outside
	// the keep-alive checks (which KeepAlive bounds); 0 means 10 s, a
	// negative value means no limit.
	Timeout time.Duration

	// Logger receives the Locker's log records: acquisitions and releases
	// (debug), takeover waits (info), retries (warning) and losses
	// (error). nil means silent.
	Logger *slog.Logger

	name    string
	desc    string // `postgres lock "name"`, the Path of AlreadyRunningError
	key     int64
	classID int64 // the key as pg_locks shows it: high 32 bits
	objID   int64 // low 32 bits
	cfg     *pgx.ConnConfig
	id      string

	// The fields as the first TryLock, Lock or Holder found them
	// (setup), with the defaults filled in.
	setupOnce sync.Once
	setupErr  error
	port      int
	keepAlive time.Duration
	timeout   time.Duration // 0: no limit
	log       *slog.Logger

	acq        sync.Mutex // serialises acquisitions
	mu         sync.Mutex // serialises setting the tenure and Unlock
	t          *tenure    // the current tenure, under mu
	cur        atomic.Pointer[tenure]
	last       atomic.Pointer[tenure]
	tableReady atomic.Bool
}

// tenure is one holding of the lock.
type tenure struct {
	conn  *conn
	info  instancelock.ProcessLock
	epoch uint64
	pid   int           // the server process of the holding session
	lost  chan struct{} // closed when the lock is found lost
	stop  chan struct{} // closed by Unlock to stop the keep-alive
	done  chan struct{} // closed when the keep-alive has returned
	err   atomic.Pointer[error]
	valid atomic.Int64 // the lease deadline, monoNow time
}

// New returns a Locker for the lock name (not empty) in the database that
// connString names (a URL or key=value string, as pgx.ParseConfig reads
// it). It connects to nothing: connections are opened by TryLock, Lock and
// Holder. It fails when the name is empty or the connection string is
// invalid. The optional fields of the Locker may be set before its first
// other method call.
//
// The Locker sends application_name=instancelock-pglock as a startup
// parameter (unless connString sets it) and, on each lock connection right
// after connecting, sets with set_config (unless connString sets them):
// tcp_keepalives_idle=5, tcp_keepalives_interval=2, tcp_keepalives_count=3,
// tcp_user_timeout=10000 (so the server frees the lock about 10 s after the
// holder's host vanishes from the network), idle_session_timeout=0,
// idle_in_transaction_session_timeout=0, statement_timeout=0 and
// lock_timeout=0 (a waiter blocks in pg_advisory_lock). They are not
// startup parameters because PgBouncer refuses those; through a pooler they
// apply to the pooler's connection to the server, so the dead-host
// detection then depends on the pooler's own client keepalives
// (PgBouncer's tcp_keepalive and client_idle_timeout settings).
func New(connString, name string) (*Locker, error) {
	if name == "" {
		return nil, errors.New("pglock: New: empty lock name")
	}
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("pglock: New: %w", err)
	}
	// One round trip per statement, unnamed statements: nothing is left on
	// the session but the lock and its markers.
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	// application_name is the only startup parameter added (PgBouncer
	// passes it on); the others are set after connecting (sessionParams).
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = "instancelock-pglock"
	}
	key := Key(name)
	return &Locker{
		name: name, desc: fmt.Sprintf("postgres lock %q", name),
		key: key, classID: int64(uint64(key) >> 32), objID: int64(uint64(key) & 0xffffffff),
		cfg: cfg, id: uuid.NewString(),
	}, nil
}

// errNotNew is the error of a Locker that New did not make.
var errNotNew = errors.New("pglock: the Locker was not made by New: use pglock.New(connString, name)")

// setup reads the optional fields once, at the first TryLock, Lock or
// Holder, and fills in their defaults. Its error names a field out of
// range; it stays.
func (l *Locker) setup() error {
	l.setupOnce.Do(func() {
		var bad []error
		if l.cfg == nil {
			bad = append(bad, errNotNew)
		}
		if l.Port < 0 || l.Port > 65535 {
			bad = append(bad, fmt.Errorf("pglock: Locker.Port is %d: want 1..65535, or 0 for none", l.Port))
		}
		l.port = l.Port
		switch {
		case l.KeepAlive == 0:
			l.keepAlive = defaultKeepAlive
		case l.KeepAlive < minKeepAlive:
			bad = append(bad, fmt.Errorf("pglock: Locker.KeepAlive is %v: want at least %v, or 0 for %v", l.KeepAlive, minKeepAlive, defaultKeepAlive))
		default:
			l.keepAlive = l.KeepAlive
		}
		switch {
		case l.Timeout == 0:
			l.timeout = defaultTimeout
		case l.Timeout > 0:
			l.timeout = l.Timeout
		}
		log := l.Logger
		if log == nil {
			log = slog.New(slog.DiscardHandler)
		}
		l.log = log.With("lock", l.name)
		l.setupErr = errors.Join(bad...)
	})
	return l.setupErr
}

// bounded returns ctx bounded by the Timeout field (none when negative).
func (l *Locker) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if l.timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, l.timeout)
}

// Name returns the lock name given to New.
func (l *Locker) Name() string { return l.name }

// InstanceID returns the instance id this Locker writes into the holder's
// ProcessLock. It stays the same across acquisitions by the same Locker.
func (l *Locker) InstanceID() string { return l.id }

// Err returns nil while the lock is held, ErrNotHeld
// (instancelock.ErrNotHeld) when this Locker does not hold it, and an error
// matching instancelock.ErrLockLost, wrapping the cause, once the lock was
// found lost. The loss error stays until the next acquisition.
//
// Err compares the lease deadline (90% of the keep-alive interval after
// the last check that confirmed the lock, on the monotonic clock) with the
// time of the call: a process that resumes after a pause longer than that
// sees the loss at its first call, before the keep-alive runs, and the
// loss is then recorded (Lost is closed, the connection is closed).
func (l *Locker) Err() error {
	t := l.last.Load()
	if t == nil {
		return instancelock.ErrNotHeld
	}
	return l.errOf(t)
}

// errOf is Err of the tenure t.
func (l *Locker) errOf(t *tenure) error {
	if p := t.err.Load(); p != nil {
		return *p
	}
	if err := l.expired(t); err != nil {
		l.lose(t, err)
		return *t.err.Load()
	}
	return nil
}

// Lost returns a channel that is closed when the held lock is lost: the
// server ended the session (pg_terminate_backend, a restart), the
// connection broke, the server did not answer a keep-alive check in time,
// or the lease deadline passed (see Err). Another instance may hold the
// lock from then on, so the holder must stop the work the lock protects.
// The channel belongs to the current holding; it is nil when the lock is
// not held, and it is not closed by Unlock.
func (l *Locker) Lost() <-chan struct{} {
	if t := l.cur.Load(); t != nil {
		return t.lost
	}
	return nil
}

// FencingToken returns the fencing epoch of the current holding: a number
// that is larger for every new holder of the name, so that a resource can
// refuse a write carrying a smaller token than one it has seen. It returns
// false when the lock is not held or was lost, including a lease deadline
// passed at the time of the call (see Err).
func (l *Locker) FencingToken() (uint64, bool) {
	t := l.cur.Load()
	if t == nil || l.errOf(t) != nil {
		return 0, false
	}
	return t.epoch, true
}

// TryLock acquires the lock without waiting for another holder: when
// another session holds it, the error is an
// *instancelock.AlreadyRunningError (matching instancelock.ErrAlreadyRunning)
// naming the holder as its metadata row says. On success the Locker keeps
// the connection it opened, publishes this process's ProcessLock with a new
// fencing epoch, and starts the keep-alive.
//
// When the previous holder did not Unlock (it crashed, or its session was
// ended under it) and may still be running, TryLock waits for that
// holder's keep-alive interval before it returns, so that the previous
// holder has learnt of its loss first; it does not wait when it can see
// that the previous holder's process is gone (same machine and PID
// namespace). After a clean Unlock it never waits. The wait is measured on
// this process's monotonic clock: the server's clock plays no part.
//
// When a session has just taken the lock and not yet published its row,
// TryLock looks again for up to half a second so that its error can name
// the holder.
//
// It fails with an error matching ErrTransactionPooler when the connection
// goes through a transaction- or statement-mode pooler, and with the
// connection's error when the server cannot be reached; the Locker then
// holds nothing. TryLock on a Locker that holds the lock is an error, and
// so is a field of the Locker out of range (see Locker).
func (l *Locker) TryLock() error {
	if err := l.beginAcquire(); err != nil {
		return err
	}
	defer l.acq.Unlock()
	var c *conn
	defer func() { l.closeLock(c) }()
	return l.attempt(context.Background(), &c, false, true, instancelock.ProcessLock{})
}

// Lock acquires the lock, waiting while another session holds it, until
// ctx is done; it then returns context.Cause(ctx) joined with the last
// error (an *instancelock.AlreadyRunningError naming the holder, or why
// the server could not be reached).
//
// It tries once with pg_try_advisory_lock (to name the holder), then
// blocks in pg_advisory_lock on its connection: the server grants the lock
// to the waiter the moment the holder's session lets go of it (Unlock, the
// holder's process dies, its session is ended), so the hand-over needs no
// polling. ctx cancels the wait (the connection is closed).
//
// Connection errors (the server restarts, refuses connections, the
// network breaks) do not end the wait: Lock reconnects after 50 ms,
// doubling up to 2 s, until ctx is done. ErrTransactionPooler and other
// errors (authentication, a missing database, permissions) end it.
// Everything TryLock says about a successful acquisition holds.
func (l *Locker) Lock(ctx context.Context) error {
	if err := l.beginAcquire(); err != nil {
		return err
	}
	defer l.acq.Unlock()
	var c *conn
	defer func() { l.closeLock(c) }()
	var last error
	delay := retryMin
	wait := false                     // block in pg_advisory_lock (after a first try named the holder)
	var seen instancelock.ProcessLock // the holder the first try named
	for {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if wait {
			actx, cancel = context.WithTimeout(ctx, blockFor)
		}
		err := l.attempt(actx, &c, wait, false, seen)
		blockEnded := wait && actx.Err() != nil && ctx.Err() == nil
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			if last == nil || !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				last = err
			}
			return errors.Join(context.Cause(ctx), last)
		}
		var are *instancelock.AlreadyRunningError
		switch {
		case errors.As(err, &are):
			last, wait, delay, seen = err, true, retryMin, are.Holder
			continue
		case blockEnded:
			continue // blockFor passed: wait again on a new connection
		case !retryable(err):
			return err
		}
		if last == nil || !errors.Is(last, instancelock.ErrAlreadyRunning) {
			last = err
		}
		l.log.Warn("cannot reach the lock's server; retrying", "in", delay, "err", err)
		t := time.NewTimer(delay/2 + rand.N(delay/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(context.Cause(ctx), err)
		case <-t.C:
		}
		delay = min(2*delay, retryMax)
		wait = false
	}
}

// beginAcquire takes acq, or fails when the lock is held or a field is
// out of range.
func (l *Locker) beginAcquire() error {
	if err := l.setup(); err != nil {
		return err
	}
	l.acq.Lock()
	l.mu.Lock()
	held := l.t != nil
	l.mu.Unlock()
	if held {
		l.acq.Unlock()
		return fmt.Errorf("pglock: %s: %w", l.desc, instancelock.ErrAlreadyHeld)
	}
	return nil
}

// retryable reports whether an acquisition error may go away by itself:
// the server could not be reached or went away (a restart, a network
// error), or it refuses connections for now (starting up, shutting down,
// too many connections).
func retryable(err error) bool {
	if errors.Is(err, ErrTransactionPooler) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), // connection exception
			strings.HasPrefix(pgErr.Code, "57P"),         // admin shutdown, crash shutdown, cannot connect now
			pgErr.Code == "53300",                        // too many connections
			pgErr.Code == "40001", pgErr.Code == "40P01": // serialization failure, deadlock
			return true
		}
		return false
	}
	var ne net.Error
	var ce *pgconn.ConnectError
	return errors.As(err, &ne) || errors.As(err, &ce) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		pgconn.SafeToRetry(err) || pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded)
}

// Unlock releases the lock: it marks the metadata row released, unlocks
// and closes the connection. Unlock on a Locker that does not hold the lock
// returns nil, so it may be deferred and also called on shutdown; on a lost
// lock it only closes what is left. When a statement fails the connection
// is closed anyway, which ends the session and so frees the lock on the
// server, and the error is returned.
func (l *Locker) Unlock() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := l.t
	if t == nil {
		return nil
	}
	close(t.stop)
	<-t.done
	l.t = nil
	l.cur.Store(nil)
	var err error
	if t.err.Load() == nil {
		ctx, cancel := l.bounded(context.Background())
		err = l.release(ctx, t)
		cancel()
		e := instancelock.ErrNotHeld
		t.err.CompareAndSwap(nil, &e)
	}
	l.closeLock(t.conn)
	if err != nil {
		return fmt.Errorf("pglock: releasing %s (the connection is closed, which frees the lock on the server): %w", l.desc, err)
	}
	l.log.Debug("lock released", "epoch", t.epoch)
	return nil
}

// release marks t's row released and then unlocks, in one round trip: the
// two statements are pipelined, each in its own transaction (a Sync after
// each), so the row is committed before the lock is free and the next
// holder reads it released.
func (l *Locker) release(ctx context.Context, t *tenure) error {
	p := t.conn.PgConn().StartPipeline(ctx)
	p.SendQueryParams(sqlRelease, [][]byte{[]byte(l.name), []byte(strconv.FormatUint(t.epoch, 10))}, nil, nil, nil)
	p.SendPipelineSync()
	p.SendQueryParams(sqlUnlock, [][]byte{[]byte(strconv.FormatInt(l.key, 10))}, nil, nil, nil)
	p.SendPipelineSync()
	err := p.Flush()
	for syncs := 0; err == nil && syncs < 2; {
		var res any
		res, err = p.GetResults()
		switch r := res.(type) {
		case *pgconn.ResultReader:
			_, err = r.Close()
		case *pgconn.PipelineSync:
			syncs++
		}
	}
	return errors.Join(err, p.Close())
}

// Holder returns the ProcessLock of the current holder, read from its
// metadata row on a connection opened for the call. The error matches
// instancelock.ErrNotRunning when no session holds the lock, even if a row
// is left from an earlier holder. A lock held by a session that wrote no
// metadata (another program using the same key) is an error that does not
// match ErrNotRunning.
func (l *Locker) Holder() (instancelock.ProcessLock, error) {
	if l.setup(); l.cfg == nil { // the fields' errors are TryLock's and Lock's
		return instancelock.ProcessLock{}, errNotNew
	}
	ctx, cancel := l.bounded(context.Background())
	defer cancel()
	c, err := l.connect(ctx)
	if err != nil {
		return instancelock.ProcessLock{}, err
	}
	defer l.closeConn(c)
	h, err := l.lookup(ctx, c, true)
	switch {
	case err != nil:
		return instancelock.ProcessLock{}, err
	case h.pid == 0:
		return instancelock.ProcessLock{}, fmt.Errorf("pglock: %s: %w", l.desc, instancelock.ErrNotRunning)
	case !h.known:
		return instancelock.ProcessLock{}, fmt.Errorf("pglock: %s is held by server process %d, which published no holder metadata", l.desc, h.pid)
	}
	return h.info, nil
}

// lostError is the error of a lost lock: it matches ErrLockLost and
// unwraps to the cause.
type lostError struct {
	desc  string
	cause error
}

func (e *lostError) Error() string {
	return "pglock: " + e.desc + " lost (another instance may hold it now): " + e.cause.Error()
}

func (e *lostError) Is(target error) bool { return target == instancelock.ErrLockLost }

func (e *lostError) Unwrap() error { return e.cause }
