package instancelock

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Every error of a Locker names the PID file's path once. The errors of
// the system calls on the file (*fs.PathError, *os.LinkError) already
// name it, so they are returned as they are, or, when the Locker adds
// what it was doing, their path is left out: pathError and cause are the
// one place that decides this.

// pathError returns err, a failure of op on the PID file, as an
// *fs.PathError naming the path once: an *fs.PathError about the path
// itself is returned as it is; anything else becomes the cause (see
// cause) of a new one, {op, path, cause}.
func (l *Locker) pathError(op string, err error) error {
	if pe, ok := err.(*fs.PathError); ok && pe.Path == l.path {
		return err
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
