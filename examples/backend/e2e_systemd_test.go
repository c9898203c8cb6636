//go:build unix

package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// notifySocket listens on a datagram socket as systemd does for a
// Type=notify service and returns its name and a reader of the next
// notification ("" when none came within d).
func notifySocket(t *testing.T) (string, func(d time.Duration) string) {
	t.Helper()
	name := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return name, func(d time.Duration) string {
		buf := make([]byte, 4096)
		conn.SetReadDeadline(time.Now().Add(d))
		n, err := conn.Read(buf)
		if err != nil {
			return ""
		}
		return string(buf[:n])
	}
}

// The built backend under a systemd-like notify socket with a watchdog of
// 300 ms: starting, READY=1, WATCHDOG=1 pings; the database file is deleted
// (the Critical check databaseFile fails): the pings stop, with a STATUS
// saying why; SIGTERM: STOPPING=1 and the shutdown's STATUS lines, exit 0.
func TestE2ESystemdNotify(t *testing.T) {
	t.Parallel()
	socket, read := notifySocket(t)
	dir, port := t.TempDir(), freePort(t)
	b := start(t, launch{dir: dir, port: port, env: []string{"NOTIFY_SOCKET=" + socket, "WATCHDOG_USEC=300000"}})
	var got []string
	next := func(what string, d time.Duration) string {
		t.Helper()
		m := read(d)
		if m == "" {
			t.Fatalf("no notification within %v, want %s; got so far %q", d, what, got)
		}
		got = append(got, m)
		return m
	}
	if m := next("STATUS=starting", readyTimeout); m != "STATUS=starting" {
		t.Fatalf("first notification %q, want STATUS=starting", m)
	}
	if m := next("READY=1", readyTimeout); m != "READY=1\nSTATUS=running" {
		t.Fatalf("got %q, want READY=1", m)
	}
	b.waitReady()
	for range 3 {
		if m := next("WATCHDOG=1", 10*time.Second); m != "WATCHDOG=1" {
			t.Fatalf("got %q, want WATCHDOG=1", m)
		}
	}

	if err := os.Remove(b.db); err != nil {
		t.Fatal(err)
	}
	for {
		m := next("the STATUS saying the pings stop", 10*time.Second)
		if m == "WATCHDOG=1" {
			continue // the check's result is cached for up to a second
		}
		if !strings.HasPrefix(m, "STATUS=not live, watchdog pings stopped: ") || !strings.Contains(m, "databaseFile") {
			t.Fatalf("got %q, want the STATUS saying the pings stop", m)
		}
		break
	}
	// Five watchdog intervals without a ping: systemd would restart it.
	if m := read(1500 * time.Millisecond); m != "" {
		t.Fatalf("notification %q while the critical check fails", m)
	}
	var health map[string]any
	if code, _ := b.call("GET", "/livez", &health); code != 503 {
		t.Errorf("/livez answered %d while the critical check fails, want 503", code)
	}

	b.signal(syscall.SIGTERM)
	m := next("STOPPING=1", exitTimeout)
	if !strings.HasPrefix(m, "STOPPING=1\nSTATUS=stopping: received signal terminated\nEXTEND_TIMEOUT_USEC=") {
		t.Fatalf("got %q, want STOPPING=1 with the cause and EXTEND_TIMEOUT_USEC", m)
	}
	for _, hook := range []string{"http server", "stop agents", "close database"} {
		if m := next("hook "+hook, exitTimeout); !strings.Contains(m, `shutdown hook "`+hook+`"`) || !strings.Contains(m, "EXTEND_TIMEOUT_USEC=") {
			t.Fatalf("got %q, want the STATUS of hook %q with EXTEND_TIMEOUT_USEC", m, hook)
		}
	}
	if m := next("STATUS=stopped", exitTimeout); m != "STATUS=stopped, 0 failures" {
		t.Fatalf("got %q, want STATUS=stopped, 0 failures", m)
	}
	if code := b.waitExit(exitTimeout); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	assertGone(t, b.pidfile)
}
