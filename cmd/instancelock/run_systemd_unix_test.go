//go:build unix

package main

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Under systemd, run reports the command as the unit's main process
// (MAINPID= on the notify socket, received before the command ends) and
// passes NOTIFY_SOCKET and WATCHDOG_USEC on to it, without WATCHDOG_PID,
// which names the wrapper.
func TestRunSystemdMainPID(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cmd := cliCmd("run", "-pidfile", filepath.Join(dir, "job.pid"), "--", "sh", "-c",
		`echo "$$ ${NOTIFY_SOCKET-unset} ${WATCHDOG_USEC-unset} ${WATCHDOG_PID-unset}"`)
	cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+socket, "WATCHDOG_USEC=30000000", "WATCHDOG_PID=1")
	r := runCmd(t, cmd)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	var pid int
	var sock, usec, wpid string
	if _, err := fmt.Sscan(r.stdout, &pid, &sock, &usec, &wpid); err != nil {
		t.Fatalf("the command said %q: %v", r.stdout, err)
	}
	if sock != socket || usec != "30000000" || wpid != "unset" {
		t.Errorf("the command saw NOTIFY_SOCKET=%s WATCHDOG_USEC=%s WATCHDOG_PID=%s; want %s, 30000000, unset", sock, usec, wpid, socket)
	}
	buf := make([]byte, 512)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	if got, want := string(buf[:n]), fmt.Sprintf("MAINPID=%d", pid); got != want {
		t.Errorf("notification %q, want %q", got, want)
	}

	// Without NOTIFY_SOCKET the environment is the wrapper's, untouched.
	cmd = cliCmd("run", "-pidfile", filepath.Join(dir, "job.pid"), "--", "sh", "-c", `echo "${WATCHDOG_PID-unset}"`)
	cmd.Env = append(cmd.Env, "NOTIFY_SOCKET=", "WATCHDOG_PID=1")
	if r := runCmd(t, cmd); r.code != 0 || strings.TrimSpace(r.stdout) != "1" {
		t.Errorf("without NOTIFY_SOCKET: exit %d, the command saw WATCHDOG_PID=%q", r.code, r.stdout)
	}
}
