//go:build !linux

package testserver

import "syscall"

// dieWithParent: only Linux has a parent-death signal; elsewhere Stop and
// StopShared are the only way a server ends.
func dieWithParent(syscall.Signal) *syscall.SysProcAttr { return nil }
