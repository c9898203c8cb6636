package instancelock_test

import (
	"syscall"

	"golang.org/x/sys/windows"
)

// memWinErrnoName spells Windows' errors as the scripts of
// TestMemFSMatchesOS do, by the Unix errno they stand for (syscall.ENOENT
// and ENOTDIR are Windows' ERROR_FILE_NOT_FOUND and ERROR_PATH_NOT_FOUND
// already).
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
