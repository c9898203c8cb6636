package instancelock

import (
	"errors"
	"io"
	"io/fs"
	"os"
)

// FS is the file system a Locker works on: the operating system's by
// default, or MemFS in tests. Paths are passed as given to the Locker.
//
// An implementation must make OpenFile with os.O_CREATE|os.O_EXCL atomic,
// Link fail with an error matching fs.ErrExist when newname exists, and
// Rename replace newname atomically.
type FS interface {
	// OpenFile opens name as os.OpenFile does, except that it never
	// follows a symbolic link in the last component and never blocks on a
	// FIFO.
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	// Lstat describes name without following a final symbolic link.
	Lstat(name string) (fs.FileInfo, error)
	// MkdirAll creates a directory and its parents, as os.MkdirAll.
	MkdirAll(name string, perm fs.FileMode) error
	// Link makes newname a hard link to oldname, as os.Link.
	Link(oldname, newname string) error
	// Rename moves oldname to newname, replacing it, as os.Rename.
	Rename(oldname, newname string) error
	// Remove removes name, as os.Remove.
	Remove(name string) error
	// SameFile reports whether two FileInfos returned by this FS describe
	// the same file (device and inode on Unix).
	SameFile(a, b fs.FileInfo) bool
}

// File is an open file of an FS. The usual implementation wraps *os.File.
type File interface {
	io.ReadWriteCloser
	io.Seeker
	io.ReaderAt
	io.WriterAt
	Name() string
	Stat() (fs.FileInfo, error)
	Truncate(size int64) error
	// TryLock places an exclusive kernel lock on the file without waiting
	// and returns an error matching ErrWouldBlock if another open file
	// holds a lock on it. The lock belongs to this open file: it is
	// dropped when the File is closed, or when its process dies.
	TryLock() error
	// TryRLock places a shared lock, likewise.
	TryRLock() error
	// Unlock drops the lock this File holds.
	Unlock() error
}

// ErrWouldBlock is returned by File.TryLock and File.TryRLock when another
// open file holds a conflicting lock.
var ErrWouldBlock = errors.New("file is locked by another process")

// OSFS is the operating system's file system, the default FS. Files are
// opened close-on-exec, so a child process started by the holder does not
// inherit the lock.
type OSFS struct{}

var _ FS = OSFS{}

// OpenFile implements FS.
func (OSFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := openFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

// Lstat implements FS.
func (OSFS) Lstat(name string) (fs.FileInfo, error) { return os.Lstat(name) }

// MkdirAll implements FS.
func (OSFS) MkdirAll(name string, perm fs.FileMode) error { return os.MkdirAll(name, perm) }

// Link implements FS.
func (OSFS) Link(oldname, newname string) error { return os.Link(oldname, newname) }

// Rename implements FS.
func (OSFS) Rename(oldname, newname string) error { return os.Rename(oldname, newname) }

// Remove implements FS.
func (OSFS) Remove(name string) error { return os.Remove(name) }

// SameFile implements FS with os.SameFile.
func (OSFS) SameFile(a, b fs.FileInfo) bool { return os.SameFile(a, b) }

type osFile struct{ *os.File }

func (f osFile) TryLock() error  { return f.lock(true) }
func (f osFile) TryRLock() error { return f.lock(false) }
func (f osFile) Unlock() error   { return f.unlock() }

// chmod sets the mode of name; the Locker uses it on directories it
// created.
func (OSFS) chmod(name string, mode fs.FileMode) error { return os.Chmod(name, mode) }

// readDirNames lists the names in dir; the Locker uses it to find the
// temporary files that crashed processes left.
func (OSFS) readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}
