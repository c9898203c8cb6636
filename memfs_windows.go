//go:build windows

package instancelock

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

// memWinErrnoName spells Windows' errors as the tests' scripts do, by the
// Unix errno they stand for (syscall.ENOENT and ENOTDIR are Windows'
// ERROR_FILE_NOT_FOUND and ERROR_PATH_NOT_FOUND already).
func memWinErrnoName(e syscall.Errno) string {
	switch e {
	case windows.ERROR_FILE_EXISTS, windows.ERROR_ALREADY_EXISTS:
		return "EEXIST"
	case windows.ERROR_ACCESS_DENIED:
		return "EACCES"
	case windows.ERROR_DIR_NOT_EMPTY:
		return "ENOTEMPTY"
	}
	return ""
}
