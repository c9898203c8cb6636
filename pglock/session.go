package pglock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/ad5dec64/instancelock"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The statements. Keys are passed as bigint; pg_locks shows a bigint
// advisory key as classid (high 32 bits), objid (low 32 bits), objsubid 1.
const (
	sqlTryLock = `SELECT pg_try_advisory_lock($1::bigint), pg_backend_pid()`
	sqlUnlock  = `SELECT pg_advisory_unlock($1::bigint)`
	// sqlCheck is the pooler check after acquiring and the keep-alive.
	sqlCheck = `SELECT pg_backend_pid(), EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
		AND pid = pg_backend_pid() AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1 AND granted)`
	// sqlLookup finds the session holding the key in this database, and its
	// row if that session wrote it.
	sqlLookup = `SELECT l.pid, h.holder::text FROM pg_locks l
		LEFT JOIN ` + Table + ` h ON h.name = $1 AND h.backend_pid = l.pid
		WHERE l.locktype = 'advisory' AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND l.classid = $2::bigint::oid AND l.objid = $3::bigint::oid AND l.objsubid = 1 AND l.granted
		ORDER BY h.holder IS NULL LIMIT 1`
	// sqlLookupNoTable is sqlLookup before any Locker created the table.
	sqlLookupNoTable = `SELECT l.pid, NULL::text FROM pg_locks l
		WHERE l.locktype = 'advisory' AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND l.classid = $2::bigint::oid AND l.objid = $3::bigint::oid AND l.objsubid = 1 AND l.granted
		AND $1::text IS NOT NULL LIMIT 1`
	sqlTableExists = `SELECT to_regclass('` + Table + `') IS NOT NULL`
	sqlCreateTable = `CREATE TABLE IF NOT EXISTS ` + Table + ` (
		name         text PRIMARY KEY,
		key          bigint NOT NULL,
		epoch        bigint NOT NULL,
		holder       jsonb NOT NULL,
		backend_pid  integer NOT NULL,
		keepalive_ms bigint NOT NULL,
		scope        text NOT NULL,
		released     boolean NOT NULL,
		settle_until timestamptz NOT NULL,
		updated_at   timestamptz NOT NULL)`
	sqlPrevious = `SELECT holder::text, keepalive_ms, scope, released FROM ` + Table + ` WHERE name = $1`
	// sqlAcquire publishes the new holder. settle_until is when every
	// earlier holder that may still believe it holds the lock has learnt
	// otherwise: it only moves forward, so a chain of holders that crash
	// while settling cannot shorten it.
	sqlAcquire = `INSERT INTO ` + Table + ` AS h
		(name, key, epoch, holder, backend_pid, keepalive_ms, scope, released, settle_until, updated_at)
		VALUES ($1, $2::bigint, 1, $3::jsonb, pg_backend_pid(), $4::bigint, $5, false, now() + $6::bigint * interval '1 millisecond', now())
		ON CONFLICT (name) DO UPDATE SET key = EXCLUDED.key, epoch = h.epoch + 1, holder = EXCLUDED.holder,
			backend_pid = EXCLUDED.backend_pid, keepalive_ms = EXCLUDED.keepalive_ms, scope = EXCLUDED.scope,
			released = false, settle_until = greatest(h.settle_until, EXCLUDED.settle_until), updated_at = now()
		RETURNING epoch, greatest(0, floor(extract(epoch FROM h.settle_until - now()) * 1000))::bigint`
	sqlRelease = `UPDATE ` + Table + ` SET released = true, updated_at = now()
		WHERE name = $1 AND epoch = $2::bigint AND backend_pid = pg_backend_pid()`
)

// connect opens a dedicated connection.
func (l *Locker) connect(ctx context.Context) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, l.cfg)
	if err != nil {
		return nil, fmt.Errorf("pglock: %s: connecting: %w", l.desc, err)
	}
	return c, nil
}

// closeConn closes c (nil is fine), which ends the session and so frees
// any lock it holds.
func (l *Locker) closeConn(c *pgx.Conn) {
	if c == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c.Close(ctx)
}

// row runs one statement bounded by the timeout and scans its row.
func (l *Locker) row(ctx context.Context, c *pgx.Conn, sql string, args []any, dest ...any) error {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	return c.QueryRow(ctx, sql, args...).Scan(dest...)
}

// attempt is one try at the lock on *cp (opened if nil). On success the
// connection moves to the new tenure and *cp becomes nil. When another
// session holds the lock, the error is an *AlreadyRunningError and *cp
// stays open for the next try. On any other error *cp is closed and nil.
// retry makes it look again, shortly, at a holder that has not published
// its metadata yet (TryLock wants to name it; Lock polls anyway).
func (l *Locker) attempt(ctx context.Context, cp **pgx.Conn, retry bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.t != nil {
		return fmt.Errorf("pglock: %s: already held by this Locker", l.desc)
	}
	fail := func(err error) error {
		l.closeConn(*cp)
		*cp = nil
		return err
	}
	if *cp == nil {
		c, err := l.connect(ctx)
		if err != nil {
			return err
		}
		*cp = c
	}
	c := *cp
	var got bool
	var pid int32
	for tries := 0; ; tries++ {
		if err := l.row(ctx, c, sqlTryLock, []any{l.key}, &got, &pid); err != nil {
			return fail(fmt.Errorf("pglock: %s: pg_try_advisory_lock: %w", l.desc, err))
		}
		if got {
			break
		}
		h, err := l.lookup(ctx, c, retry)
		if err != nil {
			return fail(err)
		}
		if h.pid == 0 && tries < 2 {
			continue // released between the two statements: try again
		}
		are := &instancelock.AlreadyRunningError{Path: l.desc, Holder: h.info}
		switch {
		case h.pid == 0:
			are.Reason = "another session held the advisory lock a moment ago"
		case h.known:
			are.Reason = fmt.Sprintf("server process %d holds the advisory lock", h.pid)
		default:
			are.Reason = fmt.Sprintf("server process %d holds the advisory lock and published no holder metadata", h.pid)
		}
		return are
	}
	// The lock must be visible, on the same server process, to the next
	// statement: behind a transaction-mode pooler it is not.
	var pid2 int32
	var held bool
	if err := l.row(ctx, c, sqlCheck, []any{l.classID, l.objID}, &pid2, &held); err != nil {
		return fail(fmt.Errorf("pglock: %s: checking the lock: %w", l.desc, err))
	}
	if pid2 != pid || !held {
		l.row(ctx, c, sqlUnlock, []any{l.key}, new(bool)) // best effort; closing does the rest
		return fail(fmt.Errorf("%w (pg_try_advisory_lock ran on server process %d, the next statement on %d, which holds the lock: %v)",
			ErrTransactionPooler, pid, pid2, held))
	}
	info, err := instancelock.Current(l.port)
	if err != nil {
		return fail(err)
	}
	info.InstanceID = l.id
	epoch, settle, err := l.publish(ctx, c, info)
	if err != nil {
		return fail(err)
	}
	if settle > 0 {
		l.log.Info("took over from a holder that did not release the lock; waiting until it has noticed", "wait", settle)
		t := time.NewTimer(settle)
		select {
		case <-ctx.Done():
			t.Stop()
			return fail(fmt.Errorf("pglock: %s: waiting for the previous holder to notice its loss: %w", l.desc, context.Cause(ctx)))
		case <-t.C:
		}
		if err := l.row(ctx, c, sqlCheck, []any{l.classID, l.objID}, &pid2, &held); err != nil || pid2 != pid || !held {
			return fail(fmt.Errorf("pglock: %s: lost while waiting for the previous holder (held: %v): %w", l.desc, held, err))
		}
	}
	t := &tenure{conn: c, info: info, epoch: epoch, pid: int(pid),
		lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	*cp = nil
	l.t = t
	l.cur.Store(t)
	l.last.Store(t)
	l.log.Debug("lock acquired", "epoch", epoch, "backend", pid)
	go l.keepAliveLoop(t)
	return nil
}

// publish writes the holder's row and returns its fencing epoch and how
// long to wait for earlier holders to notice their loss.
func (l *Locker) publish(ctx context.Context, c *pgx.Conn, info instancelock.ProcessLock) (uint64, time.Duration, error) {
	if err := l.ensureTable(ctx, c); err != nil {
		return 0, 0, err
	}
	data, err := info.MarshalJSON()
	if err != nil {
		return 0, 0, err
	}
	var wait time.Duration
	var prevJSON, prevScope string
	var prevKeepAlive int64
	var released bool
	err = l.row(ctx, c, sqlPrevious, []any{l.name}, &prevJSON, &prevKeepAlive, &prevScope, &released)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return 0, 0, fmt.Errorf("pglock: %s: reading the previous holder: %w", l.desc, err)
	case !released:
		prev, _ := instancelock.ParseProcessLock([]byte(prevJSON))
		wait = l.settle(prev, prevScope, time.Duration(prevKeepAlive)*time.Millisecond)
	}
	var epoch, settleMS int64
	err = l.row(ctx, c, sqlAcquire, []any{l.name, l.key, string(data), l.keepAlive.Milliseconds(), l.scope, wait.Milliseconds()},
		&epoch, &settleMS)
	if err != nil {
		return 0, 0, fmt.Errorf("pglock: %s: publishing the holder: %w", l.desc, err)
	}
	return uint64(epoch), min(time.Duration(settleMS)*time.Millisecond, maxSettle), nil
}

// settle returns how long a new holder waits for a previous holder, which
// did not release the lock, to learn from its keep-alive that it lost it:
// nothing when that holder was this Locker (Unlock stopped it) or when its
// process is visibly gone, its keep-alive interval otherwise.
func (l *Locker) settle(prev instancelock.ProcessLock, scope string, keepAlive time.Duration) time.Duration {
	switch {
	case prev.InstanceID == l.id:
		return 0
	case scope != "" && scope == l.scope && processGone(prev):
		return 0
	}
	return min(max(keepAlive, 0), maxSettle)
}

// processGone reports whether the process that wrote pl, which runs in this
// process's host and PID namespace, has exited (or its pid now names
// another process).
func processGone(pl instancelock.ProcessLock) bool {
	if pl.PID <= 0 || pl.PID == os.Getpid() {
		return false
	}
	var procs instancelock.OSProcesses
	alive, err := procs.Alive(pl.PID)
	switch {
	case err != nil:
		return false
	case !alive, zombie(pl.PID):
		return true
	case pl.StartToken != "":
		token, _, err := procs.Start(pl.PID)
		return err == nil && token != pl.StartToken
	}
	return false
}

// ensureTable creates the metadata table if it is missing. Two sessions
// creating it at once may collide in the catalog; the loser finds it made.
func (l *Locker) ensureTable(ctx context.Context, c *pgx.Conn) error {
	if l.tableReady.Load() {
		return nil
	}
	var exists bool
	if err := l.row(ctx, c, sqlTableExists, nil, &exists); err != nil {
		return fmt.Errorf("pglock: %s: looking for table %s: %w", l.desc, Table, err)
	}
	if !exists {
		ectx, cancel := context.WithTimeout(ctx, l.timeout)
		_, err := c.Exec(ectx, sqlCreateTable)
		cancel()
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == "23505" || pgErr.Code == "42P07" || pgErr.Code == "42710") {
			err = nil // created concurrently by another session
		}
		if err != nil {
			return fmt.Errorf("pglock: %s: creating table %s: %w", l.desc, Table, err)
		}
	}
	l.tableReady.Store(true)
	return nil
}

// holderRow is what lookup found: pid 0 when no session holds the key;
// known when the holding session published its metadata.
type holderRow struct {
	pid   int
	known bool
	info  instancelock.ProcessLock
}

// lookup finds the session that holds the lock and its metadata. With
// retry it looks again for up to half a second when the holder has not
// published its row yet (it does so right after taking the lock).
func (l *Locker) lookup(ctx context.Context, c *pgx.Conn, retry bool) (holderRow, error) {
	deadline := time.Now().Add(500 * time.Millisecond)
	for {
		h, err := l.lookupOnce(ctx, c)
		if err != nil || h.pid == 0 || h.known || !retry || time.Now().After(deadline) {
			return h, err
		}
		t := time.NewTimer(10 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return h, nil
		case <-t.C:
		}
	}
}

func (l *Locker) lookupOnce(ctx context.Context, c *pgx.Conn) (holderRow, error) {
	var pid int32
	var data *string
	args := []any{l.name, l.classID, l.objID}
	err := l.row(ctx, c, sqlLookup, args, &pid, &data)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // no table yet
		err = l.row(ctx, c, sqlLookupNoTable, args, &pid, &data)
	}
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return holderRow{}, nil
	case err != nil:
		return holderRow{}, fmt.Errorf("pglock: %s: reading the holder: %w", l.desc, err)
	}
	h := holderRow{pid: int(pid)}
	if data != nil {
		if info, err := instancelock.ParseProcessLock([]byte(*data)); err == nil {
			h.info, h.known = info, true
		}
	}
	return h, nil
}

// keepAliveLoop checks twice per keep-alive interval, each check bounded
// to 40% of it, that the session still holds the lock. A loss that happens
// at time L is seen by the first check that starts after L, at most half an
// interval later, which fails at most 40% of an interval after it starts.
func (l *Locker) keepAliveLoop(t *tenure) {
	defer close(t.done)
	tick := time.NewTicker(l.keepAlive / 2)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
		}
		if err := l.check(t); err != nil {
			var lerr error = &lostError{desc: l.desc, cause: err}
			t.err.Store(&lerr)
			close(t.lost)
			l.log.Error("lock lost: stop the work it protects", "err", err)
			l.closeConn(t.conn)
			return
		}
	}
}

// check runs one keep-alive check.
func (l *Locker) check(t *tenure) error {
	limit := l.keepAlive * 2 / 5
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	var pid int32
	var held bool
	err := t.conn.QueryRow(ctx, sqlCheck, l.classID, l.objID).Scan(&pid, &held)
	switch {
	case err != nil && ctx.Err() != nil:
		return fmt.Errorf("the server did not answer the keep-alive check within %v: %w", limit, err)
	case err != nil:
		return fmt.Errorf("keep-alive check: %w", err)
	case int(pid) != t.pid:
		return fmt.Errorf("%w (the session moved from server process %d to %d)", ErrTransactionPooler, t.pid, pid)
	case !held:
		return errors.New("the session no longer holds the advisory lock (pg_advisory_unlock_all or DISCARD ALL ran on it?)")
	}
	return nil
}
