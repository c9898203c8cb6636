//go:build !windows && !plan9

package instancelock_test

import "syscall"

// memWinErrnoName is "": these errno values are the system's own.
func memWinErrnoName(syscall.Errno) string { return "" }
