//go:build windows

package instancelock

import (
	"errors"
	"io/fs"
	"os"

	"golang.org/x/sys/windows"
)

// openFlags: Go opens files on Windows without FILE_SHARE_DELETE, so a held
// PID file cannot be deleted or replaced by another process.
const openFlags = 0

// publishByRename is false on Windows: a file held open without
// FILE_SHARE_DELETE cannot be renamed, so the PID file is locked first and
// written in place.
const publishByRename = false

// Windows locks are mandatory: the lock covers one byte far past the JSON
// content (at 4 GiB), so other processes can still read the file.
const lockOffsetHigh = 1

func (f osFile) lock(exclusive bool) error {
	flags := uint32(windows.LOCKFILE_FAIL_IMMEDIATELY)
	if exclusive {
		flags |= windows.LOCKFILE_EXCLUSIVE_LOCK
	}
	ol := &windows.Overlapped{OffsetHigh: lockOffsetHigh}
	err := windows.LockFileEx(windows.Handle(f.Fd()), flags, 0, 1, 0, ol)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, windows.ERROR_LOCK_VIOLATION), errors.Is(err, windows.ERROR_IO_PENDING):
		return ErrWouldBlock
	}
	return &fs.PathError{Op: "LockFileEx", Path: f.Name(), Err: err}
}

func (f osFile) unlock() error {
	ol := &windows.Overlapped{OffsetHigh: lockOffsetHigh}
	if err := windows.UnlockFileEx(windows.Handle(f.Fd()), 0, 1, 0, ol); err != nil {
		return &fs.PathError{Op: "UnlockFileEx", Path: f.Name(), Err: err}
	}
	return nil
}

func openFile(name string, flag int, perm fs.FileMode) (*os.File, error) {
	return os.OpenFile(name, flag, perm)
}

// otherOwner: files are not replaced here (see publishByRename), so their
// owner does not matter.
func otherOwner(fs.FileInfo) bool { return false }

// fileGroup: files are not replaced here (see publishByRename), so their
// group does not matter.
func fileGroup(fs.FileInfo) (int, bool) { return 0, false }
