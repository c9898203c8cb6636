//go:build linux || freebsd

package main

import (
	"os"
	"os/exec"
	"syscall"
)

// setParentDeathSignal makes the kernel kill the child when the wrapper
// dies, however it dies (SIGKILL included), so that the child never runs
// once the lock is free. The signal is tied to the thread that starts the
// child: the caller keeps that goroutine locked to its thread until the
// child has exited.
func setParentDeathSignal(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}

// bindChild does nothing here: the parent-death signal binds the child.
func bindChild(*os.Process) error { return nil }
