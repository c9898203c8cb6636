//go:build !linux && !freebsd && !windows

package main

import (
	"os"
	"os/exec"
)

// setParentDeathSignal does nothing here: the system has no parent-death
// signal, so a child outlives a wrapper that is killed with SIGKILL.
func setParentDeathSignal(*exec.Cmd) {}

// bindChild does nothing here (see setParentDeathSignal).
func bindChild(*os.Process) error { return nil }
