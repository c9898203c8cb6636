//go:build !linux && !freebsd

package main

import "os/exec"

// setParentDeathSignal does nothing here: the system has no parent-death
// signal, so a child outlives a wrapper that is killed with SIGKILL.
func setParentDeathSignal(*exec.Cmd) {}
