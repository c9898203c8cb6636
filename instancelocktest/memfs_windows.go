//go:build windows

package instancelocktest

import (
	"syscall"

	"golang.org/x/sys/windows"
)

// memWinErrno is the error Windows returns where Unix returns e, for a
// MemFS with Windows' rules; noPath: the directory part of the name is
// missing or not a directory.
func memWinErrno(e syscall.Errno, noPath bool) syscall.Errno {
	switch e {
	case syscall.ENOENT, syscall.ENOTDIR:
		if noPath || e == syscall.ENOTDIR {
			return windows.ERROR_PATH_NOT_FOUND
		}
		return windows.ERROR_FILE_NOT_FOUND
	case syscall.EEXIST:
		return windows.ERROR_FILE_EXISTS
	case syscall.EACCES, syscall.EPERM, syscall.EBADF:
		return windows.ERROR_ACCESS_DENIED
	case syscall.ENOTEMPTY:
		return windows.ERROR_DIR_NOT_EMPTY
	}
	return e
}
