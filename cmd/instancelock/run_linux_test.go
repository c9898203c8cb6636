//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRunWrapperKilled: when the wrapper is killed with SIGKILL, the kernel
// kills its child (parent-death signal), so the command never runs without
// the lock, and the lock is free again.
func TestRunWrapperKilled(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "job.pid")
	wrapper := start(t, startCLI("run", "-pidfile", pidfile, "--", "sleep", "60"), false)
	var child int
	eventually(t, "the wrapper runs sleep", func() bool {
		child = childOf(wrapper.pid())
		name, _ := procState(child)
		return name == "sleep"
	})
	if r := runCLI(t, "status", pidfile); r.code != 0 {
		t.Fatalf("status while running: %+v", r)
	}

	wrapper.cmd.Process.Signal(syscall.SIGKILL)
	if code := wrapper.wait(t); code != 128+int(syscall.SIGKILL) {
		t.Fatalf("wrapper exit %d", code)
	}
	eventually(t, "the child is gone", func() bool {
		_, state := procState(child)
		return state == "" || state == "Z" // gone, or dead and waiting for init to reap it
	})

	// The killed wrapper left its file behind: stale, and free to take.
	if r := runCLI(t, "status", pidfile); r.code != 1 || !strings.Contains(r.stdout, "stale") {
		t.Errorf("status after the kill: %+v", r)
	}
	if r := runCLI(t, "run", "-pidfile", pidfile, "--", "true"); r.code != 0 || r.stderr != "" {
		t.Errorf("run after the kill: %+v", r)
	}
}

// TestRunWaitInterrupted: a signal ends the wait for the lock; the command
// does not run.
func TestRunWaitInterrupted(t *testing.T) {
	dir := t.TempDir()
	pidfile := filepath.Join(dir, "job.pid")
	holdWithRun(t, pidfile, sleeper)
	cmd := startCLI("run", "-pidfile", pidfile, "-wait", "1m", "--", "touch", filepath.Join(dir, "ran"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	waiter := start(t, cmd, false)
	// It waits on inotify once it has set up its signal handling.
	eventually(t, "the waiter waits", func() bool { return hasInotify(waiter.pid()) })
	cmd.Process.Signal(syscall.SIGTERM)
	code := waiter.wait(t)
	if code != 128+int(syscall.SIGTERM) || !strings.Contains(stderr.String(), "SIGTERM arrived while waiting for "+pidfile) {
		t.Errorf("interrupted waiter: exit %d, stderr %q; want 143 and why", code, stderr.String())
	}
	if exists(filepath.Join(dir, "ran")) {
		t.Error("the interrupted waiter ran its command")
	}
}

// hasInotify reports whether process pid has an inotify descriptor open.
func hasInotify(pid int) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if target, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.Contains(target, "inotify") {
			return true
		}
	}
	return false
}

// childOf returns the PID of a child of parent, or 0.
func childOf(parent int) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if f := statFields(data); len(f) > 1 && f[1] == strconv.Itoa(parent) {
			return pid
		}
	}
	return 0
}

// procState returns the command name and the state letter of pid (R, S, Z,
// ...), or "" when there is no such process.
func procState(pid int) (name, state string) {
	if pid <= 0 {
		return "", ""
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", ""
	}
	open, end := bytes.IndexByte(data, '('), bytes.LastIndexByte(data, ')')
	if open < 0 || end < open {
		return "", ""
	}
	if f := statFields(data); len(f) > 0 {
		state = f[0]
	}
	return string(data[open+1 : end]), state
}

// statFields are the fields of /proc/PID/stat after the command name: state,
// ppid, ...
func statFields(data []byte) []string {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(data[i+1:]))
}

// TestRunTerminalCtrlC: in a terminal, Ctrl-C reaches the command, and the
// wrapper survives it and exits with the command's status.
func TestRunTerminalCtrlC(t *testing.T) {
	master, slave := openPTY(t)
	pidfile := filepath.Join(t.TempDir(), "job.pid")
	script := `trap 'echo got-INT; exit 5' INT; ` + sleeper
	cmd := cliCmd("run", "-pidfile", pidfile, "--", "sh", "-c", script)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	wrapper := start(t, cmd, false)
	slave.Close()
	out := readLines(master)
	out.expect(t, "ready")
	if _, err := master.Write([]byte{3}); err != nil { // Ctrl-C
		t.Fatal(err)
	}
	out.expect(t, "got-INT")
	if code := wrapper.wait(t); code != 5 {
		t.Errorf("wrapper exit %d, want the command's 5", code)
	}
}

func init() {
	helpers["foreground"] = foregroundHelper
}

// foregroundHelper runs with a terminal as its controlling terminal and
// says what inTerminalForeground makes of a child in its own (foreground)
// process group and of one in a process group of its own.
func foregroundHelper() int {
	same := exec.Command("sleep", "30")
	own := exec.Command("sleep", "30")
	own.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	for _, c := range []*exec.Cmd{same, own} {
		if err := c.Start(); err != nil {
			fmt.Println("error:", err)
			return 1
		}
		defer c.Wait()
		defer c.Process.Kill()
	}
	fmt.Printf("same=%v own=%v\n", inTerminalForeground(same.Process.Pid), inTerminalForeground(own.Process.Pid))
	return 0
}

// TestInTerminalForeground: the wrapper holds back the terminal's signals
// exactly when the command is in the terminal's foreground process group
// (the terminal signalled it already): a second SIGINT would make many
// programs skip their graceful shutdown.
func TestInTerminalForeground(t *testing.T) {
	master, slave := openPTY(t)
	cmd := helperCmd("foreground")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	helper := start(t, cmd, false)
	slave.Close()
	if l := readLines(master).expect(t, "same="); strings.TrimSpace(l) != "same=true own=false" {
		t.Errorf("helper in a terminal: %q, want same=true own=false", l)
	}
	helper.wait(t)

	// Without a terminal (this new session has none), nothing is held back.
	sleep := exec.Command("sleep", "30")
	sleep.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	sess := start(t, sleep, false)
	if inTerminalForeground(sess.pid()) {
		t.Error("a process without a terminal is in a terminal's foreground")
	}
}

// openPTY opens a pseudo-terminal pair.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fd := int(master.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return master, slave
}
