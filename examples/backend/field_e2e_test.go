//go:build unix

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A -pidfile that names someone's file (a one-word slip) is refused, and
// the file is left byte for byte as it was, also after the refusal.
func TestE2EForeignPIDFileIsRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notes := filepath.Join(dir, "d", "notes.txt")
	if err := os.MkdirAll(filepath.Dir(notes), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(notes, []byte("notes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := start(t, launch{dir: dir, port: freePort(t), flags: []string{"-pidfile", notes, "-db", filepath.Join(dir, "app.db")}})
	if code := b.waitExit(exitTimeout); code != exitError {
		t.Fatalf("exit %d; want %d", code, exitError)
	}
	if !strings.Contains(b.log(), "not a PID file") || !strings.Contains(b.log(), notes) {
		t.Errorf("the refusal does not say what is wrong:\n%s", b.log())
	}
	if data, err := os.ReadFile(notes); err != nil || string(data) != "notes\n" {
		t.Errorf("notes.txt was changed: %q, %v", data, err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(notes)); len(entries) != 1 {
		t.Errorf("files were created next to notes.txt: %v", entries)
	}
	assertGone(t, filepath.Join(dir, "app.db"))
}

// -pidfile data/backend.db, the database itself: refused, and the database
// is intact.
func TestE2EDatabaseAsPIDFileIsRefused(t *testing.T) {
	t.Parallel()
	dir, port := t.TempDir(), freePort(t)
	first := start(t, launch{dir: dir, port: port, flags: []string{"-agent-interval", "5ms", "-agents", "2"}})
	first.waitReady()
	first.waitRows(10)
	first.signal(syscall.SIGTERM)
	if code := first.waitExit(exitTimeout); code != 0 {
		t.Fatalf("first exited %d", code)
	}
	before, err := os.ReadFile(first.db)
	if err != nil {
		t.Fatal(err)
	}
	rows := rowsByPID(t, first.db)

	slip := start(t, launch{dir: dir, port: port, flags: []string{"-pidfile", first.db}})
	if code := slip.waitExit(exitTimeout); code != exitError {
		t.Fatalf("exit %d; want %d", code, exitError)
	}
	if !strings.Contains(slip.log(), "not a PID file") {
		t.Errorf("the refusal does not say what is wrong:\n%s", slip.log())
	}
	after, err := os.ReadFile(first.db)
	if err != nil || !bytes.Equal(before, after) {
		t.Fatalf("the database was changed (%d bytes before, %d after, %v)", len(before), len(after), err)
	}
	if again := rowsByPID(t, first.db); again[first.pid()] != rows[first.pid()] {
		t.Errorf("rows by pid %v; before %v", again, rows)
	}
}
