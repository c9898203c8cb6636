// Package pglock is an instance lock for a fleet: a PostgreSQL session
// advisory lock that one process of many, on any number of hosts, holds at
// a time, so that only one replica of a backend does the singleton work.
//
//	lk, err := pglock.New("postgres://app@db.internal/app", "orchestrator", pglock.WithPort(3000))
//	if err != nil { log.Fatal(err) }
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
package pglock

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ad5dec64/instancelock"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Table is the table, in the connection's default schema (search_path),
// where holders publish their metadata and fencing epoch. A Locker creates
// it when it first acquires a lock and the table is missing. Do not delete
// its rows: the epoch of a name would restart at 1.
const Table = "instancelock_holders"

// Defaults of the options.
const (
	// DefaultKeepAlive is how soon a holder learns that it lost the lock,
	// unless WithKeepAlive says otherwise.
	DefaultKeepAlive = time.Second
	// DefaultTimeout bounds connecting and each statement, unless
	// WithTimeout says otherwise.
	DefaultTimeout = 10 * time.Second
)

// Polling of Lock: the first wait, and the longest.
const (
	pollMin = 25 * time.Millisecond
	pollMax = 250 * time.Millisecond
)

// maxSettle caps the time an acquirer waits for the previous holder to
// notice its loss, whatever the previous holder's row says.
const maxSettle = time.Minute

// ErrTransactionPooler is matched by the error of an acquisition (and by
// the cause of a loss) when the session that took the advisory lock is not
// the session that runs the next statement: the connection goes through a
// transaction-mode pooler (PgBouncer pool_mode=transaction) or a proxy that
// moves clients between server sessions. Session locks cannot work there;
// connect to PostgreSQL directly or through a session-mode pool.
var ErrTransactionPooler = errors.New("pglock: the advisory lock is not held by the session that took it: " +
	"the connection goes through a transaction-mode pooler (PgBouncer pool_mode=transaction) or a proxy that moves sessions; " +
	"connect to PostgreSQL directly or through a session-mode pool")

// An Option configures a Locker.
type Option func(*config)

type config struct {
	port      int
	keepAlive time.Duration
	timeout   time.Duration
	logger    *slog.Logger
	err       error
}

// WithPort records the port the instance serves on in the holder's
// ProcessLock. It must be in 1..65535.
func WithPort(port int) Option {
	return func(c *config) {
		if port < 1 || port > 65535 {
			c.err = errors.Join(c.err, fmt.Errorf("pglock: WithPort(%d): port outside 1..65535", port))
		}
		c.port = port
	}
}

// WithKeepAlive sets the keep-alive interval (default DefaultKeepAlive): a
// holder checks twice per interval that its session still holds the lock,
// each check bounded to 40% of the interval, so it learns of a loss at
// most one interval after the loss. The interval is published with the
// holder: a Locker that takes over from a holder that did not Unlock, and
// may still be alive, waits that holder's interval before TryLock or Lock
// returns. It must be at least 10ms.
func WithKeepAlive(d time.Duration) Option {
	return func(c *config) {
		if d < 10*time.Millisecond {
			c.err = errors.Join(c.err, fmt.Errorf("pglock: WithKeepAlive(%v): shorter than 10ms", d))
		}
		c.keepAlive = d
	}
}

// WithTimeout bounds connecting and each statement the Locker runs outside
// the keep-alive checks (default DefaultTimeout). It must be positive.
func WithTimeout(d time.Duration) Option {
	return func(c *config) {
		if d <= 0 {
			c.err = errors.Join(c.err, fmt.Errorf("pglock: WithTimeout(%v): not positive", d))
		}
		c.timeout = d
	}
}

// WithLogger sends the Locker's log records to l. By default it logs
// nothing.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

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
	name      string
	desc      string // `postgres lock "name"`, the Path of AlreadyRunningError
	key       int64
	classID   int64 // the key as pg_locks shows it: high 32 bits
	objID     int64 // low 32 bits
	cfg       *pgx.ConnConfig
	port      int
	keepAlive time.Duration
	timeout   time.Duration
	log       *slog.Logger
	id        string
	scope     string

	mu         sync.Mutex // serialises acquisitions and Unlock
	t          *tenure    // the current tenure, under mu
	cur        atomic.Pointer[tenure]
	last       atomic.Pointer[tenure]
	tableReady atomic.Bool
}

// tenure is one holding of the lock.
type tenure struct {
	conn  *pgx.Conn
	info  instancelock.ProcessLock
	epoch uint64
	pid   int           // the server process of the holding session
	lost  chan struct{} // closed when the lock is found lost
	stop  chan struct{} // closed by Unlock to stop the keep-alive
	done  chan struct{} // closed when the keep-alive has returned
	err   atomic.Pointer[error]
}

// New returns a Locker for the lock name (not empty) in the database that
// connString names (a URL or key=value string, as pgx.ParseConfig reads
// it). It connects to nothing: connections are opened by TryLock, Lock and
// Holder. It fails when an option or the connection string is invalid.
//
// The Locker sets, unless connString sets them, the session parameters
// application_name, tcp_keepalives_idle=5, tcp_keepalives_interval=2,
// tcp_keepalives_count=3, tcp_user_timeout=10000 (so the server frees the
// lock about 10 s after the holder's host vanishes from the network) and
// idle_session_timeout=0.
func New(connString, name string, opts ...Option) (*Locker, error) {
	if name == "" {
		return nil, errors.New("pglock: New: empty lock name")
	}
	c := config{keepAlive: DefaultKeepAlive, timeout: DefaultTimeout}
	for _, o := range opts {
		o(&c)
	}
	if c.err != nil {
		return nil, c.err
	}
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("pglock: New: %w", err)
	}
	// One round trip per statement, unnamed statements: nothing is left on
	// the session but the lock.
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	for k, v := range map[string]string{
		"application_name":        "instancelock-pglock",
		"tcp_keepalives_idle":     "5",
		"tcp_keepalives_interval": "2",
		"tcp_keepalives_count":    "3",
		"tcp_user_timeout":        "10000",
		"idle_session_timeout":    "0",
	} {
		if _, ok := cfg.RuntimeParams[k]; !ok {
			cfg.RuntimeParams[k] = v
		}
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	key := Key(name)
	return &Locker{
		name: name, desc: fmt.Sprintf("postgres lock %q", name),
		key: key, classID: int64(uint64(key) >> 32), objID: int64(uint64(key) & 0xffffffff),
		cfg: cfg, port: c.port, keepAlive: c.keepAlive, timeout: c.timeout,
		log: c.logger.With("lock", name), id: uuid.NewString(), scope: processScope(),
	}, nil
}

// Name returns the lock name given to New.
func (l *Locker) Name() string { return l.name }

// InstanceID returns the instance id this Locker writes into the holder's
// ProcessLock. It stays the same across acquisitions by the same Locker.
func (l *Locker) InstanceID() string { return l.id }

// Err returns nil while the lock is held, ErrNotHeld
// (instancelock.ErrNotHeld) when this Locker does not hold it, and an error
// matching instancelock.ErrLockLost, wrapping the cause, once the lock was
// found lost. The loss error stays until the next acquisition. It is a
// single atomic load.
func (l *Locker) Err() error {
	t := l.last.Load()
	if t == nil {
		return instancelock.ErrNotHeld
	}
	if p := t.err.Load(); p != nil {
		return *p
	}
	return nil
}

// Lost returns a channel that is closed when the held lock is lost: the
// server ended the session (pg_terminate_backend, a restart), the
// connection broke, or the server did not answer a keep-alive check in
// time. Another instance may hold the lock from then on, so the holder must
// stop the work the lock protects. The channel belongs to the current
// holding; it is nil when the lock is not held, and it is not closed by
// Unlock.
func (l *Locker) Lost() <-chan struct{} {
	if t := l.cur.Load(); t != nil {
		return t.lost
	}
	return nil
}

// FencingToken returns the fencing epoch of the current holding: a number
// that is larger for every new holder of the name, so that a resource can
// refuse a write carrying a smaller token than one it has seen. It returns
// false when the lock is not held or was lost.
func (l *Locker) FencingToken() (uint64, bool) {
	t := l.cur.Load()
	if t == nil || t.err.Load() != nil {
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
// that the previous holder's process is gone (same host and PID
// namespace).
//
// When a session has just taken the lock and not yet published its row,
// TryLock looks again for up to half a second so that its error can name
// the holder.
//
// It fails with an error matching ErrTransactionPooler when the connection
// goes through a transaction-mode pooler, and with the connection's error
// when the server cannot be reached; the Locker then holds nothing. TryLock
// on a Locker that holds the lock is an error.
func (l *Locker) TryLock() error {
	var c *pgx.Conn
	defer func() { l.closeConn(c) }()
	return l.attempt(context.Background(), &c, true)
}

// Lock acquires the lock, polling for it (from 25ms to 250ms apart) while
// another session holds it, until ctx is done; it then returns
// context.Cause(ctx) joined with the last *instancelock.AlreadyRunningError.
// It keeps one connection for the whole wait. Errors other than
// ErrAlreadyRunning (the server cannot be reached, a pooler) end the wait.
// Everything TryLock says about a successful acquisition holds.
func (l *Locker) Lock(ctx context.Context) error {
	var c *pgx.Conn
	defer func() { l.closeConn(c) }()
	wait := pollMin
	for {
		err := l.attempt(ctx, &c, false)
		var are *instancelock.AlreadyRunningError
		if ctx.Err() != nil && err != nil {
			return errors.Join(context.Cause(ctx), err)
		}
		if !errors.As(err, &are) {
			return err
		}
		t := time.NewTimer(wait/2 + rand.N(wait))
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(context.Cause(ctx), err)
		case <-t.C:
		}
		wait = min(2*wait, pollMax)
	}
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
		ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
		_, err = t.conn.Exec(ctx, sqlRelease, l.name, int64(t.epoch))
		if err == nil {
			_, err = t.conn.Exec(ctx, sqlUnlock, l.key)
		}
		cancel()
		e := instancelock.ErrNotHeld
		t.err.Store(&e)
	}
	l.closeConn(t.conn)
	if err != nil {
		return fmt.Errorf("pglock: releasing %s (the connection is closed, which frees the lock on the server): %w", l.desc, err)
	}
	l.log.Debug("lock released", "epoch", t.epoch)
	return nil
}

// Holder returns the ProcessLock of the current holder, read from its
// metadata row on a connection opened for the call. The error matches
// instancelock.ErrNotRunning when no session holds the lock, even if a row
// is left from an earlier holder. A lock held by a session that wrote no
// metadata (another program using the same key) is an error that does not
// match ErrNotRunning.
func (l *Locker) Holder() (instancelock.ProcessLock, error) {
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
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
