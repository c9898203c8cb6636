package pglock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ad5dec64/instancelock"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The statements. Keys are passed as bigint; pg_locks shows a bigint
// advisory key as classid (high 32 bits), objid (low 32 bits), objsubid 1.
//
// Every lock connection carries two session-level markers (custom settings,
// which a session pooler's DISCARD ALL resets): instancelock.session, set
// to a random id when the connection is opened, and instancelock.holder,
// set to the same id in the statement that takes the lock. A statement that
// finds instancelock.session not ours runs on another client's server
// session; one that finds instancelock.holder already set runs on a server
// session that holds the lock for someone (a transaction pooler handing one
// server session to several clients, where advisory locks are re-entrant):
// both refuse with ErrTransactionPooler instead of taking the lock.
const (
	// sqlTryLock and sqlWaitLock answer the server process and "" (not
	// taken), "moved", "shared", or the session id (taken).
	sqlTryLock = `SELECT pg_backend_pid(), CASE
		WHEN current_setting('instancelock.session', true) IS DISTINCT FROM $2 THEN 'moved'
		WHEN coalesce(current_setting('instancelock.holder', true), '') <> '' THEN 'shared'
		WHEN pg_try_advisory_lock($1::bigint) THEN set_config('instancelock.holder', $2, false)
		ELSE '' END`
	sqlWaitLock = `SELECT pg_backend_pid(), CASE
		WHEN current_setting('instancelock.session', true) IS DISTINCT FROM $2 THEN 'moved'
		WHEN coalesce(current_setting('instancelock.holder', true), '') <> '' THEN 'shared'
		WHEN pg_advisory_lock($1::bigint)::text = '' THEN set_config('instancelock.holder', $2, false)
		ELSE '' END`
	sqlUnlock = `SELECT pg_advisory_unlock($1::bigint)`
	// sqlSession reads the markers: the pooler probe and its echo.
	sqlSession = `SELECT pg_backend_pid(), coalesce(current_setting('instancelock.session', true), '')`
	// sqlCheck is the check after acquiring and the keep-alive: the server
	// process, whether it carries our holder marker, and whether it holds
	// the lock.
	sqlCheck = `SELECT pg_backend_pid(), current_setting('instancelock.holder', true) IS NOT DISTINCT FROM $3,
		EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
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
	// The table holds no time the lock logic reads: the hand-over wait is a
	// duration (settle_ms) the new holder waits on its own monotonic clock,
	// so a server clock that steps changes nothing. updated_at is for
	// people.
	sqlCreateTable = `CREATE TABLE IF NOT EXISTS ` + Table + ` (
		name         text PRIMARY KEY,
		key          bigint NOT NULL,
		epoch        bigint NOT NULL,
		holder       jsonb NOT NULL,
		backend_pid  integer NOT NULL,
		keepalive_ms bigint NOT NULL,
		released     boolean NOT NULL,
		settle_ms    bigint NOT NULL,
		settled      boolean NOT NULL,
		updated_at   timestamptz NOT NULL)`
	// sqlPublish runs right after the lock was taken, in one round trip:
	// the check that the lock is held by this session (server process $9,
	// our holder marker $6) — the pooler check of "the next statement" —,
	// the previous holder's row, and, only if the check passed, the new
	// holder's row with the next epoch and the hand-over wait it does
	// (settle_ms, capped at $5): none after a release; else the previous
	// holder's keep-alive interval, unless it is $10 (a holder the waiter
	// saw and found gone) or $11 (this Locker); at least what the previous
	// holder had left of its own wait when it went (settled false).
	sqlPublish = `WITH chk AS (
			SELECT pg_backend_pid() AS pid,
				current_setting('instancelock.holder', true) IS NOT DISTINCT FROM $6 AS marked,
				EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()
					AND classid = $7::bigint::oid AND objid = $8::bigint::oid AND objsubid = 1 AND granted) AS held),
		prev AS (SELECT holder::text AS holder, keepalive_ms, released, settle_ms, settled FROM ` + Table + ` WHERE name = $1),
		wait AS (SELECT least($5::bigint, CASE
				WHEN p.released IS NULL OR p.released THEN 0
				WHEN (p.holder::jsonb ->> 'instanceId') IN ($10, $11) THEN CASE WHEN p.settled THEN 0 ELSE p.settle_ms END
				ELSE greatest(p.keepalive_ms, CASE WHEN p.settled THEN 0 ELSE p.settle_ms END) END) AS ms
			FROM (SELECT 1) AS one LEFT JOIN prev p ON true),
		ins AS (INSERT INTO ` + Table + ` AS h
			(name, key, epoch, holder, backend_pid, keepalive_ms, released, settle_ms, settled, updated_at)
			SELECT $1, $2::bigint, 1, $3::jsonb, pg_backend_pid(), $4::bigint, false, w.ms, w.ms = 0, now()
			FROM chk, wait w WHERE chk.pid = $9 AND chk.marked AND chk.held
			ON CONFLICT (name) DO UPDATE SET key = EXCLUDED.key, epoch = h.epoch + 1, holder = EXCLUDED.holder,
				backend_pid = EXCLUDED.backend_pid, keepalive_ms = EXCLUDED.keepalive_ms,
				released = false, settle_ms = EXCLUDED.settle_ms, settled = EXCLUDED.settled, updated_at = now()
			RETURNING epoch, settle_ms)
		SELECT chk.pid, chk.marked, chk.held, p.holder, p.keepalive_ms, p.released, p.settle_ms, p.settled, i.epoch, i.settle_ms
		FROM chk LEFT JOIN prev p ON true LEFT JOIN ins i ON true`
	sqlSettled = `UPDATE ` + Table + ` SET settled = true, updated_at = now()
		WHERE name = $1 AND epoch = $2::bigint AND backend_pid = pg_backend_pid()`
	sqlRelease = `UPDATE ` + Table + ` SET released = true, updated_at = now()
		WHERE name = $1 AND epoch = $2::bigint AND backend_pid = pg_backend_pid()`
)

// sessionParams are set on every lock connection after it is opened,
// unless the connection string sets them: with SET rather than as startup
// parameters, which PgBouncer refuses. Through a pooler they apply to the
// pooler's server connection, not to the client's connection to the pooler.
var sessionParams = [][2]string{
	// The server frees the lock about 10 s after the holder's host
	// vanishes from the network (direct connections).
	{"tcp_keepalives_idle", "5"},
	{"tcp_keepalives_interval", "2"},
	{"tcp_keepalives_count", "3"},
	{"tcp_user_timeout", "10000"},
	// A waiter blocks in pg_advisory_lock; a holder's session idles.
	{"idle_session_timeout", "0"},
	{"idle_in_transaction_session_timeout", "0"},
	{"statement_timeout", "0"},
	{"lock_timeout", "0"},
}

// conn is a lock connection: its session carries the marker id.
type conn struct {
	*pgx.Conn
	id  string // the instancelock.session marker
	pid int32  // the server process it answered from
}

// connect opens a plain connection (Holder's).
func (l *Locker) connect(ctx context.Context) (*pgx.Conn, error) {
	ctx, cancel := l.bounded(ctx)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, l.cfg)
	if err != nil {
		return nil, fmt.Errorf("pglock: %s: connecting: %w", l.desc, err)
	}
	return c, nil
}

// connectLock opens a lock connection: it sets the session parameters and
// the session marker, then proves that the connection has a server session
// of its own. A second connection reads the marker: behind a transaction
// or statement pooler it is given the server session the first one just
// left idle, and sees the marker (or the same server process); then the
// first connection reads its marker back, which must not have moved. Either
// failure is ErrTransactionPooler, before any lock is taken.
func (l *Locker) connectLock(ctx context.Context) (*conn, error) {
	ctx, cancel := l.bounded(ctx)
	defer cancel()
	pc, err := pgx.ConnectConfig(ctx, l.cfg)
	if err != nil {
		return nil, fmt.Errorf("pglock: %s: connecting: %w", l.desc, err)
	}
	c := &conn{Conn: pc, id: uuid.NewString()}
	fail := func(err error) (*conn, error) {
		l.closeLock(c)
		return nil, err
	}
	sql := "SELECT pg_backend_pid(), concat_ws(',', set_config('instancelock.session', $1, false)"
	for _, p := range sessionParams {
		if _, set := l.cfg.RuntimeParams[p[0]]; !set {
			sql += fmt.Sprintf(", set_config('%s', '%s', false)", p[0], p[1])
		}
	}
	sql += ")"
	if err := pc.QueryRow(ctx, sql, c.id).Scan(&c.pid, nil); err != nil {
		return fail(fmt.Errorf("pglock: %s: setting up the session: %w", l.desc, err))
	}
	probe, err := pgx.ConnectConfig(ctx, l.cfg)
	if err != nil {
		return fail(fmt.Errorf("pglock: %s: connecting: %w", l.desc, err))
	}
	var pid int32
	var marker string
	err = probe.QueryRow(ctx, sqlSession).Scan(&pid, &marker)
	l.closeConn(probe)
	if err != nil {
		return fail(fmt.Errorf("pglock: %s: probing for a pooler: %w", l.desc, err))
	}
	if pid == c.pid || marker == c.id {
		return fail(fmt.Errorf("%w (a second connection was given the first one's server session, server process %d)",
			ErrTransactionPooler, pid))
	}
	if err := pc.QueryRow(ctx, sqlSession).Scan(&pid, &marker); err != nil {
		return fail(fmt.Errorf("pglock: %s: probing for a pooler: %w", l.desc, err))
	}
	if pid != c.pid || marker != c.id {
		return fail(fmt.Errorf("%w (the connection moved from server process %d to %d between two statements)",
			ErrTransactionPooler, c.pid, pid))
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

// closeLock closes a lock connection (nil is fine).
func (l *Locker) closeLock(c *conn) {
	if c != nil {
		l.closeConn(c.Conn)
	}
}

// row runs one statement bounded by the timeout and scans its row.
func (l *Locker) row(ctx context.Context, c *pgx.Conn, sql string, args []any, dest ...any) error {
	ctx, cancel := l.bounded(ctx)
	defer cancel()
	return c.QueryRow(ctx, sql, args...).Scan(dest...)
}

// attempt is one try at the lock on *cp (opened if nil). With wait it
// blocks in pg_advisory_lock until the lock is free or ctx ends (the
// server's own queue: the waiter holds the lock as soon as the holder's
// session lets go of it). On success the connection moves to the new
// tenure and *cp becomes nil. When another session holds the lock (only
// without wait), the error is an *AlreadyRunningError and *cp stays open
// for the next try. On any other error *cp is closed and nil. retry makes
// it look again, shortly, at a holder that has not published its metadata
// yet (TryLock wants to name it).
func (l *Locker) attempt(ctx context.Context, cp **conn, wait, retry bool, seen instancelock.ProcessLock) error {
	if *cp == nil {
		c, err := l.connectLock(ctx)
		if err != nil {
			return err
		}
		*cp = c
	}
	c := *cp
	fail := func(err error) error {
		l.closeLock(c)
		*cp = nil
		return err
	}
	var pid int32
	var status string
	for tries := 0; ; tries++ {
		var err error
		if wait {
			err = c.QueryRow(ctx, sqlWaitLock, l.key, c.id).Scan(&pid, &status)
		} else {
			err = l.row(ctx, c.Conn, sqlTryLock, []any{l.key, c.id}, &pid, &status)
		}
		if err != nil {
			return fail(fmt.Errorf("pglock: %s: taking the advisory lock: %w", l.desc, err))
		}
		switch status {
		case c.id:
		case "moved":
			return fail(fmt.Errorf("%w (the statement ran on server process %d, which is not this connection's session)",
				ErrTransactionPooler, pid))
		case "shared":
			return fail(fmt.Errorf("%w (server process %d already holds the lock for another client of the same server session)",
				ErrTransactionPooler, pid))
		}
		if status == c.id {
			break
		}
		h, err := l.lookup(ctx, c.Conn, retry)
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
	// The lock must be visible, on the same server session, to the next
	// statement, which also publishes the holder.
	if err := l.ensureTable(ctx, c.Conn); err != nil {
		return fail(err)
	}
	info, err := l.self()
	if err != nil {
		return fail(err)
	}
	data, err := info.MarshalJSON()
	if err != nil {
		return fail(err)
	}
	gone := ""
	if seen.InstanceID != "" && seen.PIDSpace != "" && seen.Gone() {
		gone = seen.InstanceID
	}
	checked := time.Now()
	var pid2 int32
	var marked, held bool
	var prev previous
	var epoch, rowWait *int64
	err = l.row(ctx, c.Conn, sqlPublish, []any{l.name, l.key, string(data), l.keepAlive.Milliseconds(), maxSettle.Milliseconds(),
		c.id, l.classID, l.objID, pid, gone, l.id},
		&pid2, &marked, &held, &prev.holder, &prev.keepAliveMS, &prev.released, &prev.settleMS, &prev.settled, &epoch, &rowWait)
	if err != nil {
		return fail(fmt.Errorf("pglock: %s: publishing the holder: %w", l.desc, err))
	}
	if err := l.checkHeld(ctx, c, pid, pid2, marked, held); err != nil {
		return fail(err)
	}
	if epoch == nil || rowWait == nil {
		return fail(fmt.Errorf("pglock: %s: publishing the holder: no row written", l.desc))
	}
	settle := l.handoverWait(prev)
	if settle == 0 && *rowWait > 0 {
		// The row says wait (the previous holder was not the one seen
		// while waiting), but its process is visibly gone: record that
		// nothing is left to wait for.
		if _, err := c.Exec(ctx, sqlSettled, l.name, *epoch); err != nil {
			return fail(fmt.Errorf("pglock: %s: recording the end of the hand-over wait: %w", l.desc, err))
		}
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
		checked = time.Now()
		if err := l.verify(ctx, c, pid); err != nil {
			return fail(fmt.Errorf("pglock: %s: lost while waiting for the previous holder: %w", l.desc, err))
		}
		if _, err := c.Exec(ctx, sqlSettled, l.name, *epoch); err != nil {
			return fail(fmt.Errorf("pglock: %s: recording the end of the hand-over wait: %w", l.desc, err))
		}
	}
	t := &tenure{conn: c, info: info, epoch: uint64(*epoch), pid: int(pid),
		lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	t.valid.Store(l.validUntil(checked))
	*cp = nil
	l.mu.Lock()
	l.t = t
	l.cur.Store(t)
	l.last.Store(t)
	l.mu.Unlock()
	l.log.Debug("lock acquired", "epoch", *epoch, "backend", pid)
	go l.keepAliveLoop(t)
	return nil
}

// verify checks that the session of c, server process pid, holds the lock
// under our holder marker.
func (l *Locker) verify(ctx context.Context, c *conn, pid int32) error {
	var pid2 int32
	var marked, held bool
	if err := l.row(ctx, c.Conn, sqlCheck, []any{l.classID, l.objID, c.id}, &pid2, &marked, &held); err != nil {
		return fmt.Errorf("pglock: %s: checking the lock: %w", l.desc, err)
	}
	return l.checkHeld(ctx, c, pid, pid2, marked, held)
}

// checkHeld judges a check's answer: the statement ran on server process
// pid2, which carries our holder marker (marked) and holds the lock (held).
func (l *Locker) checkHeld(ctx context.Context, c *conn, pid, pid2 int32, marked, held bool) error {
	if pid2 != pid || !marked || !held {
		l.row(ctx, c.Conn, sqlUnlock, []any{l.key}, new(bool)) // best effort; closing does the rest
		return fmt.Errorf("%w (the lock was taken on server process %d; the next statement ran on %d, marked %v, holding the lock %v)",
			ErrTransactionPooler, pid, pid2, marked, held)
	}
	return nil
}

// previous is the previous holder's row, all NULL when there is none.
type previous struct {
	holder                *string
	keepAliveMS, settleMS *int64
	released, settled     *bool
}

// handoverWait is how long a new holder waits for earlier holders to
// notice their loss, judged from the previous holder's row p: nothing
// after a release; the previous holder's keep-alive interval unless its
// process is visibly gone (settle); at least what it had left of its own
// wait when it went.
func (l *Locker) handoverWait(p previous) time.Duration {
	if p.holder == nil || p.released == nil || *p.released {
		return 0
	}
	prev, _ := instancelock.ParseProcessLock([]byte(*p.holder))
	wait := l.settle(prev, time.Duration(deref(p.keepAliveMS))*time.Millisecond)
	if p.settled != nil && !*p.settled {
		// The previous holder was still waiting for its own predecessor
		// when it went: how much of that wait had passed is not known
		// without comparing clocks, so wait all of it.
		wait = max(wait, time.Duration(deref(p.settleMS))*time.Millisecond)
	}
	return min(wait, maxSettle)
}

// self is the ProcessLock this Locker publishes.
func (l *Locker) self() (instancelock.ProcessLock, error) {
	info, err := instancelock.Current(l.port)
	info.InstanceID = l.id
	return info, err
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// settle returns how long a new holder waits for a previous holder, which
// did not release the lock, to learn from its keep-alive that it lost it:
// nothing when that holder was this Locker (Unlock stopped it) or when its
// process is visibly gone, its keep-alive interval otherwise. "Visibly
// gone" needs the previous holder's PID space (instancelock.ProcessLock
// PIDSpace: the machine's boot id and machine id and the PID namespace, not
// the host name, which two machines may share) to be this process's, or an
// earlier boot of this machine (ProcessLock.Local).
func (l *Locker) settle(prev instancelock.ProcessLock, keepAlive time.Duration) time.Duration {
	switch {
	case prev.InstanceID == l.id:
		return 0
	case prev.PIDSpace != "" && prev.Gone():
		return 0
	}
	return min(max(keepAlive, 0), maxSettle)
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
		ectx, cancel := l.bounded(ctx)
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

// validUntil is the lease deadline after a check sent at sent: 90% of the
// keep-alive interval later. A successor that takes over from a holder
// that did not release waits that holder's whole interval after it got
// the lock, which is after the holder's last successful check was sent.
func (l *Locker) validUntil(sent time.Time) int64 {
	return int64(sent.Sub(monoBase) + l.keepAlive*9/10)
}

// monoBase is the origin of the monotonic lease deadlines.
var monoBase = time.Now()

// monoNow is the monotonic time since monoBase.
func monoNow() int64 { return int64(time.Since(monoBase)) }

// keepAliveLoop checks every third of the keep-alive interval that the
// session still holds the lock; every successful check moves the lease
// deadline to 90% of an interval after the check was sent. A check that
// fails, or does not answer before the deadline, or a deadline that passed
// before the next check (the process was paused) is a loss. It returns on
// Unlock or on loss, closing the connection on loss (which ends the
// session, so a lock it still held is freed).
func (l *Locker) keepAliveLoop(t *tenure) {
	defer close(t.done)
	tick := time.NewTicker(l.keepAlive / 3)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-t.lost: // found by Err or FencingToken
			l.closeLock(t.conn)
			return
		case <-tick.C:
		}
		err := l.expired(t)
		if err == nil {
			err = l.check(t)
		}
		if err != nil {
			if l.lose(t, err) {
				l.log.Error("lock lost: stop the work it protects", "err", err)
			}
			l.closeLock(t.conn)
			return
		}
	}
}

// expired returns the loss error when t's lease deadline has passed.
func (l *Locker) expired(t *tenure) error {
	if over := monoNow() - t.valid.Load(); over > 0 {
		return fmt.Errorf("%w: no keep-alive check confirmed the lock within %v (the process was paused, or the server is slow), %v ago",
			ErrLeaseExpired, l.keepAlive*9/10, time.Duration(over).Round(time.Millisecond))
	}
	return nil
}

// lose records the loss of t once; it reports whether this call did.
func (l *Locker) lose(t *tenure, cause error) bool {
	var lerr error = &lostError{desc: l.desc, cause: cause}
	if !t.err.CompareAndSwap(nil, &lerr) {
		return false
	}
	close(t.lost)
	return true
}

// check runs one keep-alive check, bounded by the lease deadline, and
// moves the deadline on success.
func (l *Locker) check(t *tenure) error {
	sent := time.Now()
	left := time.Duration(t.valid.Load() - int64(sent.Sub(monoBase)))
	ctx, cancel := context.WithTimeout(context.Background(), left)
	defer cancel()
	var pid int32
	var marked, held bool
	err := t.conn.QueryRow(ctx, sqlCheck, l.classID, l.objID, t.conn.id).Scan(&pid, &marked, &held)
	switch {
	case err != nil && ctx.Err() != nil:
		return fmt.Errorf("%w: the server did not answer the keep-alive check before the lease deadline (%v): %w", ErrLeaseExpired, left.Round(time.Millisecond), err)
	case err != nil:
		return fmt.Errorf("keep-alive check: %w", err)
	case int(pid) != t.pid || !marked:
		return fmt.Errorf("%w (the connection moved from server process %d to %d)", ErrTransactionPooler, t.pid, pid)
	case !held:
		return errors.New("the session no longer holds the advisory lock (pg_advisory_unlock_all or DISCARD ALL ran on it?)")
	}
	v := l.validUntil(sent)
	if t.valid.Load() < v {
		t.valid.Store(v)
	}
	return nil
}
