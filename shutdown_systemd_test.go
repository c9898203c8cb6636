//go:build unix

package instancelock

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock/internal/proctest"
)

// sdSocket listens on a datagram socket as systemd does, sets NOTIFY_SOCKET
// to it, and returns a function that reads the next notification.
func sdSocket(t *testing.T) func(d time.Duration) (string, bool) {
	t.Helper()
	name := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", name)
	return func(d time.Duration) (string, bool) {
		buf := make([]byte, 4096)
		conn.SetReadDeadline(time.Now().Add(d))
		n, err := conn.Read(buf)
		if err != nil {
			return "", false
		}
		return string(buf[:n]), true
	}
}

// The notifications of a whole run, in order: starting, READY when the
// host marks the State running, watchdog pings while the critical check
// passes, none while it fails, again when it passes, then STOPPING with
// the time the shutdown may take, each hook, stopped.
func TestShutdownSystemdNotify(t *testing.T) {
	checkNoGoroutineLeak(t)
	read := sdSocket(t)
	t.Setenv("WATCHDOG_USEC", "20000") // 20 ms: a ping every 10 ms
	t.Setenv("WATCHDOG_PID", "")
	next := func(what string) string {
		t.Helper()
		m, ok := read(sdLiveness)
		if !ok {
			t.Fatalf("no notification; want %s", what)
		}
		return m
	}

	g := NewGracefulShutdown(nil)
	g.Timeout = sdLiveness
	g.Add("database", func(context.Context) error { return nil })
	g.Add("http", func(context.Context) error { return nil })
	h := NewHealth(g.State(), nil)
	h.CacheTTL = time.Nanosecond
	var failing atomic.Bool
	h.AddCheck(Check{Name: "worker", Critical: true, Run: func(context.Context) error {
		if failing.Load() {
			return errors.New("wedged")
		}
		return nil
	}})
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if m := next("STATUS=starting"); m != "STATUS=starting" {
		t.Fatalf("first notification %q, want STATUS=starting", m)
	}
	// No ping before READY, whatever the interval.
	if m, ok := read(50 * time.Millisecond); ok {
		t.Fatalf("notification %q before the State is running", m)
	}
	if err := g.State().Set(StatusRunning); err != nil {
		t.Fatal(err)
	}
	if m := next("READY=1"); m != "READY=1\nSTATUS=running" {
		t.Fatalf("got %q, want READY=1", m)
	}
	for range 3 {
		if m := next("WATCHDOG=1"); m != "WATCHDOG=1" {
			t.Fatalf("got %q, want WATCHDOG=1", m)
		}
	}
	failing.Store(true)
	for {
		m := next("the STATUS saying the pings stop")
		if m == "WATCHDOG=1" {
			continue // sent before the check failed
		}
		if !strings.HasPrefix(m, "STATUS=not live, watchdog pings stopped: ") || !strings.Contains(m, `"worker"`) {
			t.Fatalf("got %q, want the STATUS saying the pings stop", m)
		}
		break
	}
	// Ten intervals without a ping.
	if m, ok := read(200 * time.Millisecond); ok {
		t.Fatalf("notification %q while the critical check fails", m)
	}
	failing.Store(false)
	if m := next("WATCHDOG=1 again"); m != "WATCHDOG=1\nSTATUS=running" {
		t.Fatalf("got %q, want WATCHDOG=1 and STATUS=running", m)
	}

	go g.Shutdown(nil)
	m := next("STOPPING=1")
	for m == "WATCHDOG=1" {
		m = next("STOPPING=1")
	}
	lines := strings.Split(m, "\n")
	if len(lines) != 3 || lines[0] != "STOPPING=1" || lines[1] != "STATUS=stopping: shutdown requested" ||
		!strings.HasPrefix(lines[2], "EXTEND_TIMEOUT_USEC=") {
		t.Fatalf("got %q, want STOPPING=1, the cause and EXTEND_TIMEOUT_USEC", m)
	}
	for i, hook := range []string{"http", "database"} {
		m := next("the hook's STATUS")
		want := `STATUS=stopping: shutdown hook "` + hook + `" (` + string(rune('1'+i)) + " of 2)\nEXTEND_TIMEOUT_USEC="
		if !strings.HasPrefix(m, want) {
			t.Fatalf("got %q, want %q…", m, want)
		}
	}
	if m := next("STATUS=stopped"); m != "STATUS=stopped, 0 failures" {
		t.Fatalf("got %q, want STATUS=stopped, 0 failures", m)
	}
	sdWaitDone(t, g)
	if m, ok := read(50 * time.Millisecond); ok {
		t.Fatalf("notification %q after the shutdown", m)
	}
}

// Without NOTIFY_SOCKET nothing is sent, and a watchdog variable alone
// starts nothing.
func TestShutdownSystemdUnset(t *testing.T) {
	checkNoGoroutineLeak(t)
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "1000")
	g := NewGracefulShutdown(nil)
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if g.sd != nil {
		t.Fatal("a notifier without NOTIFY_SOCKET")
	}
	g.State().Set(StatusRunning)
	if err := g.Shutdown(nil); err != nil {
		t.Fatal(err)
	}
}

// A notify socket that nobody listens on: each failed notification is
// logged, and the shutdown goes on as usual.
func TestShutdownSystemdSocketGone(t *testing.T) {
	checkNoGoroutineLeak(t)
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "nobody"))
	t.Setenv("WATCHDOG_USEC", "")
	var log proctest.SyncBuffer
	g := NewGracefulShutdown(nil)
	g.Logger = slog.New(slog.NewTextHandler(&log, nil))
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	g.State().Set(StatusRunning)
	if err := g.Shutdown(nil); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(log.String(), "systemd notification failed"); n < 3 {
		t.Errorf("%d failed notifications logged, want one each for starting, READY, STOPPING…:\n%s", n, log.String())
	}
}

// READY=1 at Start when the host was ready before; a broken WATCHDOG_USEC
// is logged and starts no watchdog; another process's watchdog is not ours.
func TestShutdownSystemdReadyBeforeStart(t *testing.T) {
	checkNoGoroutineLeak(t)
	for _, env := range []struct{ usec, pid string }{{"abc", ""}, {"20000", "1"}} {
		read := sdSocket(t)
		t.Setenv("WATCHDOG_USEC", env.usec)
		t.Setenv("WATCHDOG_PID", env.pid)
		g := NewGracefulShutdown(nil)
		g.State().Set(StatusRunning)
		if err := g.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if m, _ := read(sdLiveness); m != "READY=1\nSTATUS=running" {
			t.Fatalf("got %q, want READY=1 at Start", m)
		}
		if m, ok := read(100 * time.Millisecond); ok {
			t.Fatalf("WATCHDOG_USEC=%s WATCHDOG_PID=%s: notification %q, want no watchdog", env.usec, env.pid, m)
		}
		if err := g.Shutdown(nil); err != nil {
			t.Fatal(err)
		}
	}
}
