// Package sdnotify sends systemd service notifications (the protocol of
// sd_notify(3)): READY=1, STOPPING=1, STATUS=…, EXTEND_TIMEOUT_USEC=…,
// WATCHDOG=1, MAINPID=… as one datagram to the socket named by
// NOTIFY_SOCKET.
//
// It is a few lines of the standard library on purpose: the usual package,
// github.com/coreos/go-systemd/v22/daemon, imports only the standard
// library, but its module also holds the dbus and journal packages, and
// requiring it would add github.com/godbus/dbus to the module graph of
// every program that imports instancelock, whose core module depends on
// uuid, x/sys and testify only.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Notifier sends notifications to one socket. A nil *Notifier is valid and
// sends nothing: that is what FromEnv returns outside systemd.
type Notifier struct {
	addr *net.UnixAddr
}

// FromEnv returns a Notifier for the socket named by $NOTIFY_SOCKET, or nil
// when the variable is unset or empty. A name starting with "@" is a Linux
// abstract socket (the Go runtime maps "@" to the leading NUL byte).
func FromEnv() *Notifier {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	return &Notifier{addr: &net.UnixAddr{Name: name, Net: "unixgram"}}
}

// Socket returns the socket's name as NOTIFY_SOCKET gave it ("" for nil).
func (n *Notifier) Socket() string {
	if n == nil {
		return ""
	}
	return n.addr.Name
}

// Notify sends the lines as one datagram ("READY=1", "STATUS=serving").
// It does nothing and returns nil on a nil Notifier. A line may not
// contain a newline: the protocol separates assignments by newlines.
func (n *Notifier) Notify(lines ...string) error {
	if n == nil || len(lines) == 0 {
		return nil
	}
	for _, l := range lines {
		if strings.ContainsRune(l, '\n') || !strings.Contains(l, "=") {
			return fmt.Errorf("sdnotify: invalid assignment %q: want NAME=value on one line", l)
		}
	}
	if strings.HasPrefix(n.addr.Name, "vsock:") {
		return fmt.Errorf("sdnotify: NOTIFY_SOCKET=%s: AF_VSOCK sockets are not supported", n.addr.Name)
	}
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sdnotify: NOTIFY_SOCKET=%s: %w", n.addr.Name, err)
	}
	defer conn.Close()
	msg := strings.Join(lines, "\n")
	if _, err := conn.Write([]byte(msg)); err != nil {
		return fmt.Errorf("sdnotify: NOTIFY_SOCKET=%s: %w", n.addr.Name, err)
	}
	return nil
}

// WatchdogInterval returns the watchdog timeout systemd set for this
// process ($WATCHDOG_USEC), or 0 when there is none: the variable is unset,
// or $WATCHDOG_PID names another process (the watchdog is then someone
// else's). An unreadable value is an error.
func WatchdogInterval() (time.Duration, error) {
	v := os.Getenv("WATCHDOG_USEC")
	if v == "" {
		return 0, nil
	}
	usec, err := strconv.ParseUint(v, 10, 63)
	if err != nil || usec == 0 {
		return 0, fmt.Errorf("sdnotify: invalid WATCHDOG_USEC=%q: want a positive number of microseconds", v)
	}
	if p := os.Getenv("WATCHDOG_PID"); p != "" {
		pid, err := strconv.Atoi(p)
		if err != nil || pid <= 0 {
			return 0, fmt.Errorf("sdnotify: invalid WATCHDOG_PID=%q: want a process id", p)
		}
		if pid != os.Getpid() {
			return 0, nil
		}
	}
	if usec > uint64(time.Duration(1<<63-1)/time.Microsecond) {
		return 0, errors.New("sdnotify: WATCHDOG_USEC is out of range")
	}
	return time.Duration(usec) * time.Microsecond, nil
}

// Usec formats d for EXTEND_TIMEOUT_USEC and WATCHDOG_USEC: whole
// microseconds, at least 1.
func Usec(d time.Duration) string {
	return strconv.FormatInt(max(int64(d/time.Microsecond), 1), 10)
}
