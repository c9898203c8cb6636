package instancelock

import (
	"errors"
	"io"
	"io/fs"
	"os"

	"github.com/ad5dec64/instancelock/internal/inuse"
)

// FS is the file system a Locker works on: the operating system's by
// default, or a fake in tests (instancelocktest.MemFS, set as Locker.FS).
// Paths are passed as given to the Locker.
//
// An implementation must make OpenFile with os.O_CREATE|os.O_EXCL atomic,
// Link fail with an error matching fs.ErrExist when newname exists, and
// Rename replace newname atomically.
//
// The Locker also uses these methods of an FS that has them:
//
//	// Chmod sets the permission bits of name, as os.Chmod: the Locker
//	// gives the directories it creates mode 0755 whatever the umask.
//	Chmod(name string, mode fs.FileMode) error
//	// ListDir returns the names in the directory dir: the Locker removes
//	// the temporary files that crashed processes left next to the PID file.
//	ListDir(dir string) ([]string, error)
//	// WindowsRules reports whether the FS follows Windows' rules on any
//	// system: an open file can be neither removed nor renamed (Remove and
//	// Rename then fail with an error matching ERROR_SHARING_VIOLATION on
//	// Windows, syscall.EBUSY on Unix). The Locker then writes the PID file
//	// in place instead of renaming a temporary file into place. Without
//	// this method, the FS follows the rules of the system the program runs
//	// on.
//	WindowsRules() bool
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
// open file holds a conflicting lock. A Locker's TryLock, Running and
// CleanStale return an error matching it (on Linux) when no instance holds
// the lock but a process that is not one blocks a stale or empty PID
// file: shared locks alone hold it while the lock's name is not this
// Locker's (another user's socket has it), and the error names the pids of
// both; or an exclusive flock is held by a process of this network
// namespace that the file does not name while the lock's names are free,
// and the error names its pid and uid. Any user who can open the PID file
// can take such a lock (LOCK_EX is allowed on a read-only descriptor), so
// where local users are not trusted keep the file unreadable to them
// (0640 with an operators' group, or 0600; see docs/operators.md).
// Terminate gives the exclusive-lock error too, and signals nothing.
var ErrWouldBlock = errors.New("file is locked by another process")

// osFS is the operating system's file system, the default FS. Files are
// opened close-on-exec, so a child process started by the holder does not
// inherit the lock.
type osFS struct{}

var _ FS = osFS{}

// OpenFile implements FS.
func (osFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := openFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

// Lstat implements FS.
func (osFS) Lstat(name string) (fs.FileInfo, error) { return os.Lstat(name) }

// MkdirAll implements FS.
func (osFS) MkdirAll(name string, perm fs.FileMode) error { return os.MkdirAll(name, perm) }

// Link implements FS.
func (osFS) Link(oldname, newname string) error { return os.Link(oldname, newname) }

// Rename implements FS.
func (osFS) Rename(oldname, newname string) error { return os.Rename(oldname, newname) }

// Remove implements FS.
func (osFS) Remove(name string) error { return os.Remove(name) }

// SameFile implements FS with os.SameFile.
func (osFS) SameFile(a, b fs.FileInfo) bool { return os.SameFile(a, b) }

type osFile struct{ *os.File }

func (f osFile) TryLock() error  { return f.lock(true) }
func (f osFile) TryRLock() error { return f.lock(false) }
func (f osFile) Unlock() error   { return f.unlock() }

// Chmod sets the mode of name (see FS).
func (osFS) Chmod(name string, mode fs.FileMode) error { return os.Chmod(name, mode) }

// ListDir lists the names in dir (see FS).
func (osFS) ListDir(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// isSharingViolation reports whether err says that an open handle keeps a
// file from being removed or renamed: Windows' sharing violation, or what
// an FS with Windows' rules returns for it on another system (see FS).
func isSharingViolation(err error) bool { return inuse.Is(err) }
