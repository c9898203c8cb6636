//go:build !windows && !plan9

package instancelocktest

import "syscall"

// memWinErrno is e: a MemFS with Windows' rules on another system keeps the
// errno values of this system (Windows' error numbers mean other things
// here), and applies only Windows' rules.
func memWinErrno(e syscall.Errno, noPath bool) syscall.Errno { return e }
