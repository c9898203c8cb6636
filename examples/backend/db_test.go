package main

import (
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func openTestDB(t *testing.T, path string) *DB {
	t.Helper()
	db, err := OpenDB(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(context.Background()) })
	return db
}

func TestDBWALCheckpointedOnClose(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "nested", "dir", "backend.db") // directories are created
	db := openTestDB(t, path)
	for i := range 50 {
		if _, err := db.Insert(ctx, Message{AgentID: "agent-1", Seq: int64(i + 1), PID: 42, InstanceID: "i-1", Body: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	// WAL mode: the commits sit in the -wal file until a checkpoint.
	fi, err := os.Stat(path + "-wal")
	if err != nil {
		t.Fatalf("no write-ahead log after 50 inserts: %v", err)
	}
	if fi.Size() == 0 {
		t.Fatal("the write-ahead log is empty after 50 inserts")
	}
	frames, err := db.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if frames == 0 {
		t.Error("Close checkpointed 0 frames; want the inserts copied into the database")
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(path + suffix); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still there after Close: %v", suffix, err)
		}
	}
	if frames, err := db.Close(ctx); frames != 0 || err != nil {
		t.Errorf("second Close = %d, %v; want 0, nil", frames, err)
	}

	// The rows are in the main file.
	db2 := openTestDB(t, path)
	if n, err := db2.Count(ctx); err != nil || n != 50 {
		t.Fatalf("Count after reopening = %d, %v; want 50", n, err)
	}
}

func TestDBWritersAndRecent(t *testing.T) {
	ctx := context.Background()
	db := openTestDB(t, filepath.Join(t.TempDir(), "backend.db"))
	for i, w := range []struct {
		pid int
		id  string
	}{{10, "a"}, {10, "a"}, {20, "b"}, {10, "a"}, {30, "c"}} {
		if _, err := db.Insert(ctx, Message{AgentID: "agent-1", Seq: int64(i), PID: w.pid, InstanceID: w.id,
			Body: "m", CreatedAt: time.Date(2025, 11, 27, 20, 0, i, 0, time.UTC)}); err != nil {
			t.Fatal(err)
		}
	}
	ws, err := db.Writers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []Writer{{10, "a", 3}, {20, "b", 1}, {30, "c", 1}}
	if len(ws) != len(want) {
		t.Fatalf("Writers = %v; want %v", ws, want)
	}
	for i := range want {
		if ws[i] != want[i] {
			t.Errorf("Writers[%d] = %v; want %v", i, ws[i], want[i])
		}
	}
	recent, err := db.Recent(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(recent) != 2 || recent[0].PID != 30 || recent[1].PID != 10 || recent[0].Seq != 4 {
		t.Fatalf("Recent(2) = %+v; want the rows of pid 30 then 10, newest first", recent)
	}
	if got := recent[0].CreatedAt; !got.Equal(time.Date(2025, 11, 27, 20, 0, 4, 0, time.UTC)) {
		t.Errorf("CreatedAt = %v", got)
	}
	if err := db.Ping(ctx); err != nil {
		t.Errorf("Ping = %v", err)
	}
	db.Close(ctx)
	if err := db.Ping(ctx); err == nil {
		t.Error("Ping after Close = nil; want an error")
	}
}

func TestOpenDBErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenDB(context.Background(), filepath.Join(dir, "a?b.db")); err == nil {
		t.Error("a path with '?' was accepted")
	}
	// The database's directory cannot be created under a regular file.
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenDB(context.Background(), filepath.Join(file, "backend.db")); err == nil {
		t.Error("a database under a regular file was opened")
	}
	// A file that is not a database.
	junk := filepath.Join(dir, "junk.db")
	if err := os.WriteFile(junk, []byte("this is not an SQLite database, not at all, no"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenDB(context.Background(), junk); err == nil {
		t.Error("a junk file was opened as a database")
	}
}

// The database refuses a write whose fencing token is lower than one it
// has already accepted, in the same statement as the write.
func TestDBFenceGuard(t *testing.T) {
	ctx := context.Background()
	db := openTestDB(t, filepath.Join(t.TempDir(), "backend.db"))
	insert := func(fence uint64) error {
		_, err := db.Insert(ctx, Message{AgentID: "agent-1", PID: 1, InstanceID: "i", Fence: fence, Body: "m"})
		return err
	}
	for _, step := range []struct {
		fence uint64
		stale bool
	}{
		{5, false}, {5, false}, // the same holder, again
		{3, true},  // an older holder, after a newer one wrote
		{0, false}, // no fleet lock: not checked
		{7, false}, {6, true}, {7, false},
	} {
		before := mustCount(t, db)
		err := insert(step.fence)
		if step.stale != errors.Is(err, errStaleFence) || !step.stale && err != nil {
			t.Fatalf("Insert with token %d = %v; want stale %v", step.fence, err, step.stale)
		}
		written := mustCount(t, db) - before
		if step.stale && written != 0 || !step.stale && written != 1 {
			t.Fatalf("Insert with token %d wrote %d rows", step.fence, written)
		}
	}
	recent, err := db.Recent(ctx, 1)
	if err != nil || len(recent) != 1 || recent[0].Fence != 7 {
		t.Fatalf("Recent = %+v, %v; want the last row with token 7", recent, err)
	}
	if err := insert(1 << 63); err == nil || errors.Is(err, errStaleFence) {
		t.Fatalf("Insert with a token beyond int64 = %v; want an error", err)
	}
}

// A database made before the fence column existed gets it on open; its
// old rows have token 0.
func TestDBAddsTheFenceColumn(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, agent_id TEXT NOT NULL,
		seq INTEGER NOT NULL, pid INTEGER NOT NULL, instance_id TEXT NOT NULL, body TEXT NOT NULL, created_at TEXT NOT NULL);
		INSERT INTO messages (agent_id, seq, pid, instance_id, body, created_at) VALUES ('agent-1', 1, 9, 'old', 'hi', '2025-11-27T20:00:00Z')`); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	db := openTestDB(t, path)
	if _, err := db.Insert(ctx, Message{AgentID: "agent-1", PID: 10, InstanceID: "new", Fence: 2, Body: "m"}); err != nil {
		t.Fatal(err)
	}
	recent, err := db.Recent(ctx, 2)
	if err != nil || len(recent) != 2 || recent[0].Fence != 2 || recent[1].Fence != 0 || recent[1].InstanceID != "old" {
		t.Fatalf("Recent = %+v, %v", recent, err)
	}
	db.Close(ctx)
	openTestDB(t, path) // opening again changes nothing
}
