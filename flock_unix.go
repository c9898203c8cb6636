//go:build unix

package instancelock

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// openFlags never follow a final symbolic link and never block on a FIFO;
// O_CLOEXEC keeps the lock out of exec'd children.
const openFlags = unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC

// publishByRename: on Unix a new PID file is written and locked under a
// temporary name, then linked or renamed into place, so that readers never
// see it half written.
const publishByRename = true

// lock takes a BSD flock(2) lock: it belongs to the open file description,
// so it is not dropped when another descriptor of the same file is closed
// (as a POSIX fcntl lock would be), and the kernel drops it when the last
// descriptor closes, including at process death.
func (f osFile) lock(exclusive bool) error {
	how := unix.LOCK_SH | unix.LOCK_NB
	if exclusive {
		how = unix.LOCK_EX | unix.LOCK_NB
	}
	return f.flock("flock", how)
}

func (f osFile) unlock() error { return f.flock("funlock", unix.LOCK_UN) }

func (f osFile) flock(op string, how int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		for {
			ferr = unix.Flock(int(fd), how)
			if ferr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	switch {
	case ferr == nil:
		return nil
	case errors.Is(ferr, unix.EWOULDBLOCK):
		return ErrWouldBlock
	case errors.Is(ferr, unix.ENOLCK), errors.Is(ferr, unix.EOPNOTSUPP), errors.Is(ferr, unix.EBADF):
		return &fs.PathError{Op: op, Path: f.Name(), Err: fmt.Errorf("%w: %w", ferr, errNoLocks)}
	}
	return &fs.PathError{Op: op, Path: f.Name(), Err: ferr}
}

func openFile(name string, flag int, perm fs.FileMode) (*os.File, error) {
	return os.OpenFile(name, flag|openFlags, perm)
}

// otherOwner reports whether fi, a file of the operating system, belongs
// to another user than this process's (its effective uid).
func otherOwner(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) != os.Geteuid()
}

// fileGroup returns the group of fi, a file of the operating system; ok
// is false for nil or another FileInfo.
func fileGroup(fi fs.FileInfo) (gid int, ok bool) {
	if fi == nil {
		return 0, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Gid), true
}
