package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // the pure-Go SQLite driver, registered as "sqlite"
)

// DB is the backend's SQLite database, in WAL mode: the setup whose
// corruption by two writing processes the single-instance lock prevents.
type DB struct {
	sql    *sql.DB
	path   string
	file   os.FileInfo // the database file as opened, for CheckFile
	closed atomic.Bool
}

// Message is one row an agent wrote.
type Message struct {
	ID         int64     `json:"id"`
	AgentID    string    `json:"agentId"`
	Seq        int64     `json:"seq"`
	PID        int       `json:"pid"`
	InstanceID string    `json:"instanceId"`
	Fence      uint64    `json:"fence"` // the writer's fencing token; 0 without a fleet lock
	Body       string    `json:"body"`
	CreatedAt  time.Time `json:"createdAt"`
}

// Writer is the number of rows one process (pid, instance id) wrote.
type Writer struct {
	PID        int    `json:"pid"`
	InstanceID string `json:"instanceId"`
	Rows       int64  `json:"rows"`
}

const schema = `CREATE TABLE IF NOT EXISTS messages (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	agent_id    TEXT    NOT NULL,
	seq         INTEGER NOT NULL,
	pid         INTEGER NOT NULL,
	instance_id TEXT    NOT NULL,
	body        TEXT    NOT NULL,
	created_at  TEXT    NOT NULL,
	fence       INTEGER NOT NULL DEFAULT 0
)`

// fenceColumn adds the fence column to a database created before it
// existed; fenceIndex makes max(fence) a lookup.
const (
	fenceColumn = `ALTER TABLE messages ADD COLUMN fence INTEGER NOT NULL DEFAULT 0`
	fenceIndex  = `CREATE INDEX IF NOT EXISTS messages_fence ON messages (fence)`
)

// errStaleFence is the error of a write whose fencing token is lower than
// one the database has already accepted: the writer lost the fleet lock
// and another instance has written since.
var errStaleFence = errors.New("refused: a newer holder of the fleet lock has written (stale fencing token)")

// OpenDB opens (creating it and its directory if needed) the database at
// path, switches it to WAL mode and creates the schema. It fails if the
// file system cannot give WAL mode (SQLite then silently keeps another
// journal mode).
func OpenDB(ctx context.Context, path string) (*DB, error) {
	if strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("database path %q: a '?' is not allowed in the path", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("database directory: %w", err)
	}
	// Every pooled connection gets these pragmas; busy_timeout makes the
	// agents' concurrent INSERTs wait for the write lock instead of failing.
	dsn := path + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	d := &DB{sql: db, path: path}
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		db.Close()
		return nil, fmt.Errorf("open database %s: journal mode is %q, want wal", path, mode)
	}
	if err := migrate(ctx, db); err != nil {
		db.Close()
		return nil, fmt.Errorf("create schema in %s: %w", path, err)
	}
	if d.file, err = os.Stat(path); err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	return d, nil
}

// CheckFile checks that the file at the database's path is still the one
// that was opened. When it was deleted or replaced (rm -rf of the data
// directory's contents, a restore copied over it), every row written from
// then on goes to a file no one will ever read again, and only a restart
// that reopens the path fixes that: it is the example's Critical check,
// which stops the systemd watchdog pings and fails liveness.
func (d *DB) CheckFile(ctx context.Context) error {
	fi, err := os.Stat(d.path)
	if err != nil {
		return fmt.Errorf("the database file is gone: %w", err)
	}
	if !os.SameFile(fi, d.file) {
		return fmt.Errorf("%s was replaced by another file since it was opened", d.path)
	}
	return nil
}

// migrate creates the table, or adds the fence column to a table made
// before it existed, and the fence index.
func migrate(ctx context.Context, db *sql.DB) error {
	if _, err := db.ExecContext(ctx, schema); err != nil {
		return err
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pragma_table_info('messages') WHERE name = 'fence'`).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		if _, err := db.ExecContext(ctx, fenceColumn); err != nil {
			return err
		}
	}
	_, err := db.ExecContext(ctx, fenceIndex)
	return err
}

// Path returns the database file's path.
func (d *DB) Path() string { return d.path }

// Ping checks that the database answers a query. It is the health check
// behind databaseStatus.
func (d *DB) Ping(ctx context.Context) error {
	if err := d.sql.PingContext(ctx); err != nil {
		return err
	}
	var one int
	return d.sql.QueryRowContext(ctx, "SELECT 1").Scan(&one)
}

// Insert writes m (its ID is set here, and CreatedAt when zero) and returns
// its row id.
//
// A message with a fencing token (Fence > 0) is written only if no row
// with a greater token exists: the check and the write are one statement,
// under SQLite's write lock. Otherwise nothing is written and the error is
// errStaleFence. This is the resource side of fencing: a writer that lost
// the fleet lock, and does not know it yet, is refused once the new holder
// has written. Messages without a token (no fleet lock) are not checked.
func (d *DB) Insert(ctx context.Context, m Message) (int64, error) {
	if m.CreatedAt.IsZero() {
		m.CreatedAt = time.Now()
	}
	if m.Fence > math.MaxInt64 {
		return 0, fmt.Errorf("fencing token %d does not fit in an SQLite integer", m.Fence)
	}
	res, err := d.sql.ExecContext(ctx,
		`INSERT INTO messages (agent_id, seq, pid, instance_id, fence, body, created_at)
		 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7
		 WHERE ?5 = 0 OR ?5 >= (SELECT coalesce(max(fence), 0) FROM messages)`,
		m.AgentID, m.Seq, m.PID, m.InstanceID, int64(m.Fence), m.Body, m.CreatedAt.UTC().Format(time.RFC3339Nano))
	if err != nil {
		return 0, err
	}
	if n, err := res.RowsAffected(); err != nil {
		return 0, err
	} else if n == 0 {
		return 0, fmt.Errorf("fencing token %d: %w", m.Fence, errStaleFence)
	}
	return res.LastInsertId()
}

// queryer is *sql.DB or *sql.Tx.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Stats returns, from one snapshot of the database, the number of rows, the
// rows per writing process and the last limit rows.
func (d *DB) Stats(ctx context.Context, limit int) (total int64, writers []Writer, recent []Message, err error) {
	tx, err := d.sql.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return 0, nil, nil, err
	}
	defer tx.Rollback()
	if total, err = count(ctx, tx); err != nil {
		return 0, nil, nil, err
	}
	if writers, err = writersOf(ctx, tx); err != nil {
		return 0, nil, nil, err
	}
	if recent, err = recentOf(ctx, tx, limit); err != nil {
		return 0, nil, nil, err
	}
	return total, writers, recent, nil
}

// Count returns the number of rows.
func (d *DB) Count(ctx context.Context) (int64, error) { return count(ctx, d.sql) }

func count(ctx context.Context, q queryer) (int64, error) {
	var n int64
	err := q.QueryRowContext(ctx, "SELECT count(*) FROM messages").Scan(&n)
	return n, err
}

// Writers returns the number of rows per writing process, oldest first.
func (d *DB) Writers(ctx context.Context) ([]Writer, error) { return writersOf(ctx, d.sql) }

func writersOf(ctx context.Context, q queryer) ([]Writer, error) {
	rows, err := q.QueryContext(ctx,
		`SELECT pid, instance_id, count(*) FROM messages GROUP BY pid, instance_id ORDER BY min(id)`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	ws := []Writer{}
	for rows.Next() {
		var w Writer
		if err := rows.Scan(&w.PID, &w.InstanceID, &w.Rows); err != nil {
			return nil, err
		}
		ws = append(ws, w)
	}
	return ws, rows.Err()
}

// Recent returns the last n rows, newest first.
func (d *DB) Recent(ctx context.Context, n int) ([]Message, error) { return recentOf(ctx, d.sql, n) }

func recentOf(ctx context.Context, q queryer, n int) ([]Message, error) {
	rows, err := q.QueryContext(ctx,
		`SELECT id, agent_id, seq, pid, instance_id, fence, body, created_at FROM messages ORDER BY id DESC LIMIT ?`, n)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	ms := []Message{}
	for rows.Next() {
		var m Message
		var created string
		var fence int64
		if err := rows.Scan(&m.ID, &m.AgentID, &m.Seq, &m.PID, &m.InstanceID, &fence, &m.Body, &created); err != nil {
			return nil, err
		}
		m.Fence = uint64(fence)
		m.CreatedAt, _ = time.Parse(time.RFC3339Nano, created)
		ms = append(ms, m)
	}
	return ms, rows.Err()
}

// Checkpoint copies the whole write-ahead log into the database file and
// truncates the log to zero bytes. It returns how many WAL frames were
// copied. It fails if a reader or writer kept it from finishing.
func (d *DB) Checkpoint(ctx context.Context) (frames int, err error) {
	var busy, logFrames int
	// PASSIVE first, for the count (TRUNCATE reports 0 once it has reset the
	// log), then TRUNCATE to finish and empty the log.
	if err := d.sql.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &logFrames, &frames); err != nil {
		return 0, err
	}
	var done int
	if err := d.sql.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logFrames, &done); err != nil {
		return frames, err
	}
	if busy != 0 {
		return frames, errors.New("WAL checkpoint incomplete: the database was busy")
	}
	return frames, nil
}

// Close checkpoints the WAL (TRUNCATE), then closes the database; SQLite
// also removes the -wal and -shm files when the last connection closes. It
// returns how many WAL frames the checkpoint copied. The database is closed
// even when the checkpoint fails; the errors are joined. A second Close
// does nothing and returns 0, nil.
func (d *DB) Close(ctx context.Context) (frames int, err error) {
	if !d.closed.CompareAndSwap(false, true) {
		return 0, nil
	}
	frames, cerr := d.Checkpoint(ctx)
	if cerr != nil {
		cerr = fmt.Errorf("checkpoint %s: %w", d.path, cerr)
	}
	return frames, errors.Join(cerr, d.sql.Close())
}
