package instancelock

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Errors of the Locker. Every error about the PID file or its holder
// names the file's path once (an invalid field of the Locker is reported
// by the field's name).
// Errors that concern the file are *fs.PathError values (or wrap one):
// those of the system calls match what they match (errors.Is with
// fs.ErrNotExist, fs.ErrPermission, syscall errors). Every refusal matches
// one of the sentinels below with errors.Is (or ErrAlreadyHeld,
// ErrInvalidLock, ErrWouldBlock).
var (
	// ErrAlreadyRunning: another live process holds the lock. The error is
	// an *AlreadyRunningError carrying the holder. Terminate returns it when
	// a holder runs that it may not signal: not proven to hold the lock,
	// or on another host or in another PID namespace.
	ErrAlreadyRunning = errors.New("another instance is already running")
	// ErrNotRunning: no process holds the lock (no PID file, or a stale
	// one).
	ErrNotRunning = errors.New("no instance is running")
	// ErrNotHeld: this Locker does not hold the lock.
	ErrNotHeld = errors.New("lock is not held by this Locker")
	// ErrLockLost: a held lock was lost; for the PID-file Locker, its file
	// was removed or replaced by something else than this Locker.
	ErrLockLost = errors.New("lock lost")
	// ErrForeignFile: the path holds a file that no process locks and
	// that is neither a PID file nor what a crash leaves of one (see
	// TryLock), or something that is not a regular file (a symbolic link,
	// a directory). It is someone's: it is refused and left byte for byte
	// as it is. The error is an *fs.PathError naming the path.
	ErrForeignFile = errors.New("not a PID file")

	errNoLocks    = errors.New("the file system does not support file locks (NFS without a lock manager?)")
	errNotRegular = errors.New("not a regular file")
	errSymlink    = errors.New("a symbolic link, which is not followed: give the path of the file it leads to")
	errContended  = errors.New("the PID file kept changing while the lock was being taken")
)

// AlreadyRunningError is returned when another instance holds the lock. It
// matches ErrAlreadyRunning with errors.Is; errors.As gives the holder.
type AlreadyRunningError struct {
	Path   string      // the PID file
	Holder ProcessLock // the holder, as read from the file (or named by the kernel); PID is 0 if unknown
	Reason string      // why the holder is judged alive, for logs
	// Proven: the kernel names Holder.PID as the process that holds the
	// lock (Linux: /proc/locks or SO_PEERCRED on the lock's socket), the
	// process is alive and its start token matches. Help suggests kill
	// commands only then.
	Proven bool
	// Unlocked: no process holds the kernel lock; the file is a bare PID
	// (the legacy format, written by a tool that takes no lock) naming a
	// live process of this host that is not newer than the file, and
	// starts refuse while that process lives (see docs/design.md).
	Unlocked bool
}

// Error names the holder's PID and the path, on one line.
func (e *AlreadyRunningError) Error() string { return "instancelock: " + e.describe(e.Path) }

// what is Error without the path, for errors that name it already.
func (e *AlreadyRunningError) what() string { return e.describe("it") }

func (e *AlreadyRunningError) describe(path string) string {
	if e.Holder.PID == 0 {
		return fmt.Sprintf("%v: %s is locked by a process whose details could not be read", ErrAlreadyRunning, path)
	}
	return fmt.Sprintf("%v: %s holds %s", ErrAlreadyRunning, e.Holder, path)
}

// Is reports whether target is ErrAlreadyRunning.
func (e *AlreadyRunningError) Is(target error) bool { return target == ErrAlreadyRunning }

// Every error about the PID file names its path once. The errors of
// the system calls on the file (*fs.PathError, *os.LinkError) already
// name it, so they are returned as they are, or, when the Locker adds
// what it was doing, their path is left out: pathError and cause are the
// one place that decides this.

// pathError returns err, a failure of op on the PID file, as an
// *fs.PathError naming the path once: an *fs.PathError about the path
// itself is returned as it is, one of op about a temporary name of the
// file (which a published file keeps as its File.Name) is said of the
// path; anything else becomes the cause (see cause) of a new one, {op,
// path, cause}.
func (l *Locker) pathError(op string, err error) error {
	pe, ok := err.(*fs.PathError)
	switch {
	case ok && pe.Path == l.path:
		return err
	case ok && pe.Op == op:
		if _, own := l.ownName(pe.Path); own {
			// The published file still has its temporary name.
			return &fs.PathError{Op: op, Path: l.path, Err: pe.Err}
		}
	}
	return &fs.PathError{Op: op, Path: l.path, Err: l.cause(err)}
}

// cause returns err for use inside an error that already names the PID
// file, with the path left out of its message and what err matches kept
// (errors.Is and errors.As see the same chain below it):
//   - an *fs.PathError or *os.LinkError about the path says its op: "open:
//     permission denied"; about one of the Locker's temporary files, its op
//     and base name: "write app.pid.tmp-3k9: no space left on device";
//   - an *AlreadyRunningError says who holds the lock, without the path;
//   - anything else is returned as it is.
func (l *Locker) cause(err error) error {
	switch e := err.(type) {
	case *fs.PathError:
		if name, ok := l.ownName(e.Path); ok {
			return &pathless{msg: strings.TrimSpace(e.Op + " " + name), err: e.Err}
		}
	case *os.LinkError:
		if name, ok := l.ownName(e.Old); ok && e.New == l.path {
			return &pathless{msg: strings.TrimSpace(e.Op + " " + name), err: e.Err}
		}
	case *AlreadyRunningError:
		return &pathless{msg: e.what(), err: e, whole: true}
	}
	return err
}

// ownName tells whether name is the PID file ("") or one of this Locker's
// temporary files (its base name).
func (l *Locker) ownName(name string) (string, bool) {
	switch {
	case name == l.path:
		return "", true
	case strings.HasPrefix(name, l.tmpPrefix):
		return filepath.Base(name), true
	}
	return "", false
}

// pathless is an error whose message leaves out the PID file's path: msg,
// then err's message, unless whole (msg says all of err then).
type pathless struct {
	msg   string
	err   error
	whole bool
}

func (e *pathless) Error() string {
	if e.whole {
		return e.msg
	}
	return e.msg + ": " + e.err.Error()
}

func (e *pathless) Unwrap() error { return e.err }

// refusal is Terminate's error when it signals nothing: why (when err
// does not say it all), and err, the sentinel (or *AlreadyRunningError)
// the error matches.
func (l *Locker) refusal(why string, err error) error {
	if why != "" {
		why += "; "
	}
	return fmt.Errorf("instancelock: terminate %s: %snothing signalled: %w", l.path, why, l.cause(err))
}
