package main

import (
	"context"
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
