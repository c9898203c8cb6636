//go:build unix

package sdnotify

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// listen opens a datagram socket as systemd does and returns a function
// that reads one datagram.
func listen(t *testing.T, name string) func() string {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return func() string {
		t.Helper()
		buf := make([]byte, 4096)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		return string(buf[:n])
	}
}

func TestNotify(t *testing.T) {
	names := map[string]string{"path": filepath.Join(t.TempDir(), "notify")}
	if runtime.GOOS == "linux" {
		names["abstract"] = fmt.Sprintf("@instancelock-sdnotify-test-%d", os.Getpid())
	}
	for kind, name := range names {
		t.Run(kind, func(t *testing.T) {
			read := listen(t, name)
			t.Setenv("NOTIFY_SOCKET", name)
			n := FromEnv()
			if n.Socket() != name {
				t.Fatalf("Socket() = %q, want %q", n.Socket(), name)
			}
			if err := n.Notify("READY=1", "STATUS=serving on :3000"); err != nil {
				t.Fatal(err)
			}
			if got := read(); got != "READY=1\nSTATUS=serving on :3000" {
				t.Errorf("received %q", got)
			}
			if err := n.Notify("STATUS=two\nlines"); err == nil || !strings.Contains(err.Error(), "invalid assignment") {
				t.Errorf("a line with a newline: %v, want an error", err)
			}
		})
	}
}

func TestNotifyUnset(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n := FromEnv()
	if n != nil {
		t.Fatalf("FromEnv() = %v with NOTIFY_SOCKET unset, want nil", n)
	}
	if err := n.Notify("READY=1"); err != nil || n.Socket() != "" {
		t.Errorf("nil Notifier: %v, %q", err, n.Socket())
	}
}

func TestNotifyNoListener(t *testing.T) {
	name := filepath.Join(t.TempDir(), "nobody")
	t.Setenv("NOTIFY_SOCKET", name)
	if err := FromEnv().Notify("READY=1"); err == nil || !strings.Contains(err.Error(), name) {
		t.Errorf("Notify to a missing socket: %v, want an error naming it", err)
	}
	t.Setenv("NOTIFY_SOCKET", "vsock:2:1234")
	if err := FromEnv().Notify("READY=1"); err == nil || !strings.Contains(err.Error(), "vsock") {
		t.Errorf("Notify to vsock: %v, want an error", err)
	}
}

func TestWatchdogInterval(t *testing.T) {
	me := strconv.Itoa(os.Getpid())
	for _, tc := range []struct {
		usec, pid string
		want      time.Duration
		err       string
	}{
		{"", "", 0, ""},
		{"30000000", "", 30 * time.Second, ""},
		{"30000000", me, 30 * time.Second, ""},
		{"30000000", "1", 0, ""}, // someone else's watchdog
		{"abc", "", 0, "invalid WATCHDOG_USEC"},
		{"0", "", 0, "invalid WATCHDOG_USEC"},
		{"30000000", "x", 0, "invalid WATCHDOG_PID"},
		{"9223372036854775807", "", 0, "out of range"},
	} {
		t.Setenv("WATCHDOG_USEC", tc.usec)
		t.Setenv("WATCHDOG_PID", tc.pid)
		got, err := WatchdogInterval()
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: %v, %v; want %v, %q", tc.usec, tc.pid, got, err, tc.want, tc.err)
		}
	}
	if Usec(1500*time.Millisecond) != "1500000" || Usec(0) != "1" {
		t.Errorf("Usec: %s %s", Usec(1500*time.Millisecond), Usec(0))
	}
}
