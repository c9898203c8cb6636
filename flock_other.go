//go:build !unix && !windows

package instancelock

import (
	"errors"
	"io/fs"
	"os"
)

const openFlags = 0

const publishByRename = true

// lock: this platform has no kernel file lock the package can use.
func (f osFile) lock(bool) error {
	return &fs.PathError{Op: "lock", Path: f.Name(), Err: errors.ErrUnsupported}
}

func (f osFile) unlock() error {
	return &fs.PathError{Op: "unlock", Path: f.Name(), Err: errors.ErrUnsupported}
}

func openFile(name string, flag int, perm fs.FileMode) (*os.File, error) {
	return os.OpenFile(name, flag, perm)
}

// otherOwner: files are not replaced here (see publishByRename), so their
// owner does not matter.
func otherOwner(fs.FileInfo) bool { return false }

// fileGroup: this platform has no file group the package knows of.
func fileGroup(fs.FileInfo) (int, bool) { return 0, false }
