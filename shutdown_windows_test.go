//go:build windows

package instancelock

import (
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/ad5dec64/instancelock/internal/proctest"
	"golang.org/x/sys/windows"
)

// sdPrepareChild starts a child in a process group of its own, so that a
// console control event (Ctrl-Break) can be sent to it alone, as
// `instancelock stop` would have to.
func sdPrepareChild(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{CreationFlags: windows.CREATE_NEW_PROCESS_GROUP}
}

// What `instancelock stop` does on Windows after its timeout, and Task
// Manager's End task: TerminateProcess. No hook runs (nothing can catch
// it), the system drops the lock with the process, the PID file stays and
// the next instance takes it over at once.
func TestShutdownChildTerminated(t *testing.T) {
	c := sdStartChild(t, "SHUTDOWN_HOOKS=db:ok,http:ok")
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	lines, code := c.finish()
	if len(lines) != 0 || code != 1 {
		t.Errorf("a terminated child said %q and exited %d; want nothing and 1 (TerminateProcess's code)", lines, code)
	}
	if !sdFileExists(t, c.path) {
		t.Error("TerminateProcess removed the PID file; only the process can")
	}
	l, err := New(c.path)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.TryLock(); err != nil {
		t.Fatalf("the next instance cannot take over: %v", err)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
}

// A shutdown started by the host (a Windows service's stop request calls
// Shutdown): hooks in reverse order, the PID file removed after them, exit
// code 0.
func TestShutdownChildProgrammatic(t *testing.T) {
	c := sdStartChild(t, "SHUTDOWN_HOOKS=db:ok,http:ok", "SHUTDOWN_ON_STDIN_EOF=1")
	// sdStartChild gave the child no stdin: it reads EOF at once. Wait for
	// the outcome.
	lines, code := c.finish()
	want := []string{"hook http state=stopping pidfile=true", "hook db state=stopping pidfile=true"}
	if len(lines) < 3 || !slices.Equal(lines[:2], want) || !strings.HasPrefix(lines[2], "done state=stopped") {
		t.Errorf("child said %q; want %q then done", lines, want)
	}
	if code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	c.pidFileGone()
}

// Ctrl-Break sent to the child's process group (GenerateConsoleCtrlEvent)
// reaches GracefulShutdown as os.Interrupt: the hooks run, the PID file is
// removed and the exit code is 130. It needs a console shared with the
// child.
func TestShutdownChildCtrlBreak(t *testing.T) {
	proctest.SkipUnderWine(t, "GenerateConsoleCtrlEvent fails (ERROR_INVALID_HANDLE, ERROR_INVALID_ACCESS without a console): Wine 8.0's console delivers no control events to other processes")
	if !hasConsole() {
		t.Skip("this test process has no console (a service, or output redirected by a CI runner): console control events need one")
	}
	c := sdStartChild(t, "SHUTDOWN_HOOKS=db:ok,http:ok")
	if err := windows.GenerateConsoleCtrlEvent(windows.CTRL_BREAK_EVENT, uint32(c.cmd.Process.Pid)); err != nil {
		t.Fatal(err)
	}
	lines, code := c.finish()
	if len(lines) < 3 || !strings.HasPrefix(lines[2], "done state=stopped cause=signal interrupt") {
		t.Errorf("child said %q", lines)
	}
	if code != 130 {
		t.Errorf("exit code %d, want 130", code)
	}
	c.pidFileGone()
}

var procGetConsoleProcessList = windows.NewLazySystemDLL("kernel32.dll").NewProc("GetConsoleProcessList")

// hasConsole reports whether this process is attached to a console.
func hasConsole() bool {
	var pids [4]uint32
	n, _, _ := procGetConsoleProcessList.Call(uintptr(unsafe.Pointer(&pids[0])), uintptr(len(pids)))
	return n > 0
}
