package instancelock

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// This file holds the publishing of the PID file, TryLock's file
// protocol: on Unix a complete, locked file is renamed or linked into
// place (attemptRename), on Windows, and on Unix in a directory where
// this user cannot create files, the file is locked and written in place
// (attemptInPlace). Each attempt returns what it came to; publish decides
// the next step.

// maxAttempts bounds the retries when the file changes under us.
const maxAttempts = 20

// publish puts a PID file with data at the path and returns it, open and
// locked: the file protocol of TryLock (attemptRename or attemptInPlace),
// tried again while the file changes under it. It is also how a holder
// re-publishes its file.
func (l *Locker) publish(data []byte) (published, error) {
	var last error
	pause := 100 * time.Microsecond // grows to 2 ms between transient refusals
	mode := viaRename
	if !l.byRename {
		mode = viaInPlace
	}
	replaceOthers := false // another user's file we may not write is replaced
	for range maxAttempts {
		var a attempt
		var err error
		switch mode {
		case viaRename:
			a, err = l.attemptRename(data, !replaceOthers)
		default:
			a, err = l.attemptInPlace(data, mode == viaInPlace)
		}
		if err != nil && mode == viaOthers && errors.Is(err, fs.ErrPermission) {
			// Another user's stale file that this user may not write:
			// replace it, as any stale file.
			l.log.Debug("cannot write another user's PID file in place; replacing it", "err", err)
			mode, replaceOthers = viaRename, true
			continue
		}
		if err != nil {
			return published{}, l.publishError(err, mode == viaInPlace)
		}
		switch a.try {
		case again:
			if mode == viaOthers {
				mode = viaRename // the file changed: look at the new one
			}
		case won:
			return published{f: a.f, inPlace: mode != viaRename, leftover: a.leftover, tookOver: a.tookOver}, nil
		case noTemp:
			// The directory does not let us create a file (a root-owned
			// directory with the PID file made for the service user, a
			// read-only directory), or the PID file cannot be replaced (a
			// mount point): lock and write the existing file in place, as
			// on Windows.
			l.log.Debug("the PID file cannot be replaced here; writing it in place", "err", a.cause)
			mode = viaInPlace
		case othersFile:
			// A stale file of another user (prepared for the service
			// user, say): taken in place, so that it keeps its owner and
			// stays at Unlock.
			l.log.Debug("the stale PID file belongs to another user; writing it in place, keeping it")
			mode = viaOthers
		case refused:
			if !a.transient {
				return published{}, a.refusal
			}
			last = a.refusal
			time.Sleep(pause)
			pause = min(2*pause, 2*time.Millisecond)
		}
	}
	if last != nil {
		return published{}, last
	}
	return published{}, &fs.PathError{Op: "lock", Path: l.path, Err: errContended}
}

// way is how publish puts the file at the path.
type way int

const (
	viaRename  way = iota // a new file, linked or renamed into place (attemptRename)
	viaInPlace            // the file at the path, created if missing, written in place (attemptInPlace)
	viaOthers             // another user's stale file, written in place (attemptInPlace, never created)
)

// publishError is publish's error for an attempt's err: when this user
// may not create the PID file in its directory, it says what to do.
func (l *Locker) publishError(err error, inPlace bool) error {
	if inPlace && l.byRename && errors.Is(err, fs.ErrPermission) && l.dirExists() {
		return &fs.PathError{Op: "lock", Path: l.path, Err: fmt.Errorf(
			"%w (this user cannot create files in %s: create the PID file for it beforehand, e.g. with install -o USER -m 0644 /dev/null and this path, or let it write the directory)",
			l.cause(err), l.dir())}
	}
	return err
}

// published is a PID file put at the path (publish, createHeld).
type published struct {
	f        File        // open, and locked (see lockWhenReadersLeave)
	fi       fs.FileInfo // f's FileInfo when known (createHeld), nil otherwise
	inPlace  bool        // written in place, not renamed into place
	leftover string      // a temporary name that could not be removed (Unlock retries)
	tookOver bool        // it replaced a stale file
}

// try is what one attempt of the file protocol came to.
type try int

const (
	again      try = iota // the file changed under us, or a temporary name was taken: try again at once
	won                   // the PID file is published
	refused               // a live process holds the lock
	noTemp                // no temporary file can be created next to the PID file, or it cannot replace it: write it in place
	othersFile            // the stale file at the path is another user's: write it in place, keeping it
)

// attempt is the outcome of one try of the file protocol (attemptRename,
// attemptInPlace), which publish acts on.
type attempt struct {
	try       try
	f         File   // won: the PID file, open and locked
	leftover  string // won: a temporary name that could not be removed
	tookOver  bool   // won by replacing a stale file
	refusal   error  // refused: who holds the lock (*AlreadyRunningError), or what else keeps the start out
	transient bool   // refused by content that looks stale: try again after a pause
	cause     error  // noTemp: why the file cannot be published by rename
}

// testHookBeforePublish, when set by a test, runs between the creation of
// a temporary file and its publication.
var testHookBeforePublish func(tmp string)

// stampSentinel stands for the start time in a Locker's content template.
var stampSentinel = time.Date(2000, 1, 2, 3, 4, 5, 6e6, time.UTC)

// content returns the PID file's content for info. Only StartedAt changes
// from one acquisition to the next, so the JSON is made once per Locker
// with a placeholder time, and each acquisition copies it with the time
// written over the placeholder (RFC 3339 in UTC with milliseconds has a
// fixed width): the same bytes MarshalJSON gives, without its cost.
func (l *Locker) content(info ProcessLock) ([]byte, error) {
	if l.tmpl == nil {
		t := info
		t.StartedAt = stampSentinel
		b, err := t.MarshalJSON()
		if err != nil {
			return nil, err
		}
		l.tmpl, l.tmplAt = append(b, '\n'), -1
		l.stamp = stampSentinel.Format(timeLayout)
		if s := []byte(l.stamp); bytes.Count(b, s) == 1 {
			l.tmplAt = bytes.Index(b, s)
		}
	}
	if l.tmplAt >= 0 {
		var buf [64]byte // AppendFormat uses room past its result: not data's
		if stamp := info.StartedAt.UTC().AppendFormat(buf[:0], timeLayout); len(stamp) == len(l.stamp) {
			data := slices.Clone(l.tmpl)
			copy(data[l.tmplAt:], stamp)
			return data, nil
		}
	}
	b, err := info.MarshalJSON()
	return append(b, '\n'), err
}

// checkPath refuses a path whose last component is a symbolic link or not a
// regular file.
func (l *Locker) checkPath() error {
	fi, err := l.fsys.Lstat(l.path)
	switch {
	case err == nil:
		return l.checkMode(fi)
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	return nil
}

// create opens name with flag (which includes O_CREATE) and mode perm;
// if the directory is missing, it creates it (0755) and tries again. A
// file it creates for sure (O_EXCL) gets mode perm whatever the umask.
func (l *Locker) create(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := l.fsys.OpenFile(name, flag, perm)
	if errors.Is(err, fs.ErrNotExist) {
		if err := l.mkdir(); err != nil {
			return nil, err
		}
		f, err = l.fsys.OpenFile(name, flag, perm)
	}
	if err == nil && flag&os.O_EXCL != 0 {
		if c, ok := f.(interface{ Chmod(fs.FileMode) error }); ok {
			if err := c.Chmod(perm); err != nil {
				l.log.Debug("cannot set the mode of the new file", "err", err)
			}
		}
	}
	return f, err
}

// mkdir creates the PID file's directory and its missing parents, and gives
// each directory it created mode 0755 whatever the umask. Directories that
// existed are left as they are.
func (l *Locker) mkdir() error {
	var missing []string
	for d := l.dir(); ; d = filepath.Dir(d) {
		if _, err := l.fsys.Lstat(d); !errors.Is(err, fs.ErrNotExist) {
			break
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if err := l.fsys.MkdirAll(l.dir(), 0o755); err != nil {
		return err // names the directory
	}
	if c, ok := l.fsys.(interface {
		Chmod(string, fs.FileMode) error
	}); ok {
		for i := len(missing) - 1; i >= 0; i-- {
			if err := c.Chmod(missing[i], 0o755); err != nil {
				l.log.Debug("cannot set the mode of a new directory", "dir", missing[i], "err", err)
			}
		}
	}
	return nil
}

// dirExists reports whether the PID file's directory exists.
func (l *Locker) dirExists() bool {
	_, err := l.fsys.Lstat(l.dir())
	return err == nil
}

// tempPrefix is what the names of a Locker's temporary files begin with:
// "<path>.tmp-", or, when the PID file's name is too long for that suffix
// to fit in a 255-byte name, "<dir>/.<16 hex digits of its SHA-256>.tmp-".
// A random base-36 number of at most 13 digits follows.
func tempPrefix(path string) string {
	dir, base := filepath.Split(path)
	if len(base) > 255-len(".tmp-")-13 {
		sum := sha256.Sum256([]byte(base))
		base = "." + hex.EncodeToString(sum[:8])
	}
	return dir + base + ".tmp-"
}

// canWriteInPlace reports whether a failure to create a temporary file
// means that the directory does not let this process create files, so
// that the existing PID file may be written in place instead.
func canWriteInPlace(err error) bool {
	return errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS)
}

// cannotReplace reports whether a failure to rename a new file over the
// PID file means that the file at the path cannot be replaced, so that it
// may be written in place instead: it is a mount point (EBUSY: a file
// bind-mounted into a container) or on another file system (EXDEV).
func cannotReplace(err error) bool {
	return errors.Is(err, syscall.EBUSY) || errors.Is(err, syscall.EXDEV)
}

// sweepTemps removes the temporary files that processes which died between
// creating and publishing them left next to the PID file. A temporary file
// is locked by its creator from before it is written until it is published
// or removed, so only a file whose lock this Locker can take, whose name
// has exactly the form of a temporary name and whose content is what
// writeTemp writes (or a crash remnant of it) is removed; it is removed
// while its lock is held. A creator that loses its lock to the sweep before
// taking it tries again with another name.
func (l *Locker) sweepTemps() {
	l.swept = true
	lister, ok := l.fsys.(interface {
		ListDir(string) ([]string, error)
	})
	if !ok {
		return
	}
	dir := filepath.Dir(l.tmpPrefix)
	prefix := filepath.Base(l.tmpPrefix + "x")
	prefix = prefix[:len(prefix)-1]
	names, err := lister.ListDir(dir)
	if err != nil {
		l.log.Debug("cannot look for temporary files left by crashes", "err", err)
		return
	}
	for _, n := range names {
		suffix, ok := strings.CutPrefix(n, prefix)
		if !ok || !isTempSuffix(suffix) {
			continue
		}
		name := filepath.Join(dir, n)
		f, err := l.fsys.OpenFile(name, os.O_RDONLY, 0)
		if err != nil {
			continue
		}
		if f.TryLock() == nil {
			st, serr := f.Stat()
			now, lerr := l.fsys.Lstat(name)
			data, rerr := readLimited(f)
			if serr == nil && lerr == nil && rerr == nil && st.Mode().IsRegular() && l.fsys.SameFile(st, now) {
				if _, kind := classify(data); kind != contentForeign && l.fsys.Remove(name) == nil {
					l.log.Info("removed a temporary file left by a crash", "tmp", name)
				}
			}
		}
		f.Close()
	}
}

// isTempSuffix reports whether s is the random part of a temporary name.
func isTempSuffix(s string) bool {
	if s == "" || len(s) > 13 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'z') {
			return false
		}
	}
	return true
}

func (l *Locker) checkMode(fi fs.FileInfo) error {
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return &fs.PathError{Op: "lock", Path: l.path, Err: fmt.Errorf("%w: %w", ErrForeignFile, errSymlink)}
	case !fi.Mode().IsRegular():
		return &fs.PathError{Op: "lock", Path: l.path, Err: fmt.Errorf("%w: %w (mode %v): it is left as it is; choose another path", ErrForeignFile, errNotRegular, fi.Mode())}
	}
	return nil
}

// attemptRename is one try on Unix: write and lock a new file under a
// temporary name, then publish it with link(2) (no PID file) or rename(2)
// over a stale PID file whose lock we hold. Only the holder of the kernel
// lock of the file at the path ever replaces it, so a loser never touches
// the winner's file.
//
// A stale file of another user is not replaced when others is set: the
// attempt says to write it in place (othersFile), so that it keeps its
// owner (and stays at Unlock). A stale file of this user is replaced by a
// file with its permission bits.
func (l *Locker) attemptRename(data []byte, others bool) (attempt, error) {
	fi, err := l.fsys.Lstat(l.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return l.link(data, others)
	case err != nil:
		return attempt{}, err
	}
	// A PID file is in place: judge it before writing anything, so that a
	// loser creates no file at all. A symbolic link or anything but a
	// regular file is refused before anything is created.
	if err := l.checkMode(fi); err != nil {
		return attempt{}, err
	}
	return l.replaceExisting(data, others)
}

// link publishes a new file where there is none: written and locked under
// a temporary name, then linked to the path. When another contender
// published first, its file is judged (replaceExisting).
func (l *Locker) link(data []byte, others bool) (attempt, error) {
	tmp, a, err := l.writeTemp(data, nil)
	if tmp == nil {
		return a, err
	}
	if testHookBeforePublish != nil {
		testHookBeforePublish(tmp.Name())
	}
	err = l.fsys.Link(tmp.Name(), l.path)
	if err == nil {
		a := attempt{try: won, f: tmp}
		if err := l.fsys.Remove(tmp.Name()); err != nil {
			l.log.Warn("could not remove the temporary name", "tmp", tmp.Name(), "err", err)
			a.leftover = tmp.Name()
		}
		l.log.Debug("acquired")
		return a, nil
	}
	tmp.Close()
	l.fsys.Remove(tmp.Name())
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return attempt{try: again}, nil // a sweep took the temporary name
	case !errors.Is(err, fs.ErrExist):
		return attempt{}, l.pathError("lock", err)
	}
	return l.replaceExisting(data, others) // another contender published first
}

// replaceExisting judges the file at the path under its kernel lock, and
// replaces it when it is stale: by a file with its permission bits and
// group when it is this user's; another user's is to be written in place
// when others is set (see attemptRename).
func (l *Locker) replaceExisting(data []byte, others bool) (attempt, error) {
	old, j, err := l.lockExisting()
	if err != nil || j.verdict != takeOver {
		return j.attempt(), err
	}
	defer old.Close()
	var like fs.FileInfo
	if st, err := old.Stat(); err == nil {
		if others && otherOwner(st) {
			return attempt{try: othersFile}, nil
		}
		like = st
	}
	return l.replace(data, like)
}

// replace publishes a new file over the stale PID file, whose kernel lock
// the caller holds (and which it checked is still at the path), with the
// permission bits and group of like, the stale file's FileInfo (see
// writeTemp). A file that cannot be replaced (cannotReplace) is to be
// written in place.
func (l *Locker) replace(data []byte, like fs.FileInfo) (attempt, error) {
	tmp, a, err := l.writeTemp(data, like)
	if tmp == nil {
		return a, err
	}
	if testHookBeforePublish != nil {
		testHookBeforePublish(tmp.Name())
	}
	if err := l.fsys.Rename(tmp.Name(), l.path); err != nil {
		tmp.Close()
		l.fsys.Remove(tmp.Name())
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return attempt{try: again}, nil // a sweep took the temporary name
		case cannotReplace(err):
			return attempt{try: noTemp, cause: err}, nil
		}
		return attempt{}, l.pathError("lock", err)
	}
	return attempt{try: won, f: tmp, tookOver: true}, nil
}

// writeTemp creates, locks and fills a new file next to the PID file. Its
// permission bits are 0644 when like is nil; else it is to replace the
// file like describes, and it gets that file's permission bits and, when
// this process may set it (root, or a member of the group), its group, so
// that the group's readers keep their access. A group it may not set is
// logged (debug) and the file keeps the group it was created with. When
// writeTemp returns no file, the attempt says what to do instead: try
// again (the name was taken), or write in place (no file can be created
// here).
func (l *Locker) writeTemp(data []byte, like fs.FileInfo) (File, attempt, error) {
	perm := fs.FileMode(0o644)
	if like != nil {
		perm = like.Mode().Perm()
	}
	name := l.tmpPrefix + strconv.FormatUint(rand.Uint64(), 36)
	f, err := l.create(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, perm)
	switch {
	case errors.Is(err, fs.ErrExist):
		return nil, attempt{try: again}, nil
	case err != nil && canWriteInPlace(err):
		return nil, attempt{try: noTemp, cause: err}, nil
	case err != nil:
		return nil, attempt{}, l.pathError("lock", err)
	}
	if gid, ok := fileGroup(like); ok {
		if c, ok := f.(interface{ Chown(uid, gid int) error }); ok {
			if err := c.Chown(-1, gid); err != nil {
				l.log.Debug("cannot give the new file the group of the file it replaces", "gid", gid, "err", err)
			}
		}
	}
	if err := f.TryLock(); errors.Is(err, ErrWouldBlock) {
		// A sweep took it between its creation and this lock: it is
		// removing it.
		f.Close()
		return nil, attempt{try: again}, nil
	} else if err != nil {
		f.Close()
		l.fsys.Remove(name)
		return nil, attempt{}, l.pathError("lock", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		l.fsys.Remove(name)
		return nil, attempt{}, l.pathError("lock", err)
	}
	return f, attempt{}, nil
}

// lockExisting opens the file at the path, takes its kernel lock and judges
// it. It returns the file, open and locked, when the judgement is to take
// it over.
func (l *Locker) lockExisting() (File, judgement, error) {
	old, err := l.fsys.OpenFile(l.path, os.O_RDONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, judgement{verdict: changed}, nil
	}
	if err != nil {
		return nil, judgement{}, l.openError(err)
	}
	j, err := l.judgeLocked(old)
	if err != nil || j.verdict != takeOver {
		old.Close()
		return nil, j, err
	}
	return old, j, nil
}

// openError is the error of opening the path: a symbolic link or anything
// but a regular file there is refused as such (ErrForeignFile), anything
// else is the open's own error.
func (l *Locker) openError(err error) error {
	if fi, lerr := l.fsys.Lstat(l.path); lerr == nil {
		if merr := l.checkMode(fi); merr != nil {
			return merr
		}
	}
	return l.pathError("open", err)
}

// attemptInPlace is one try on Windows, where a file held open cannot be
// renamed, and on Unix in a directory where this user cannot create files,
// for a PID file that cannot be replaced (a mount point) and for another
// user's stale file: open the PID file (creating it when create is set),
// judge it (an empty one: claimEmpty), and write it in place when it may
// be taken over.
func (l *Locker) attemptInPlace(data []byte, create bool) (attempt, error) {
	var f File
	var err error
	if create {
		f, err = l.create(l.path, os.O_RDWR|os.O_CREATE, 0o644)
	} else if f, err = l.fsys.OpenFile(l.path, os.O_RDWR, 0); errors.Is(err, fs.ErrNotExist) {
		return attempt{try: again}, nil
	}
	if err != nil {
		return attempt{}, l.openError(err)
	}
	st, err := f.Stat()
	wasEmpty := err == nil && st.Size() == 0
	var j judgement
	switch {
	case err != nil:
	case wasEmpty:
		j, err = l.claimEmpty(f, st)
	default:
		j, err = l.judgeLocked(f)
	}
	if err != nil || j.verdict != takeOver {
		f.Close()
		return j.attempt(), err
	}
	if err := l.writeInPlace(f, data); err != nil {
		f.Close()
		if wasEmpty {
			// The file was empty (most likely created by this attempt):
			// leave nothing behind. If another contender opened it
			// meanwhile, the removal fails and the file is left to it.
			l.fsys.Remove(l.path)
		}
		return attempt{}, err
	}
	return attempt{try: won, f: f}, nil
}

// claimEmpty takes the kernel lock of f, an empty file at the path that
// st describes (most likely just created by this attempt): there is
// nothing to judge, but it must be locked and still be at the path. An
// empty file that only shared locks hold (readers, or a squatter) while
// this Locker holds the lock's names is taken over too: its lock is taken
// once they leave (see lockWhenReadersLeave).
func (l *Locker) claimEmpty(f File, st fs.FileInfo) (judgement, error) {
	switch err := f.TryLock(); {
	case err == nil:
		if now, err := l.fsys.Lstat(l.path); err != nil || !l.fsys.SameFile(st, now) {
			return judgement{verdict: changed}, nil
		}
		return judgement{verdict: takeOver}, nil
	case !errors.Is(err, ErrWouldBlock):
		return judgement{}, err
	}
	if l.kernel {
		if writers, _, err := flockOwners(st); err == nil {
			if j, ok := l.judgeSquatted(writers, nil, st.ModTime()); ok {
				return j, nil
			}
		}
	}
	switch readers, ok := l.onlyReaders(st); {
	case ok:
		l.log.Warn("the PID file is held by shared locks only (readers, or someone squatting it); writing it in place, its lock is taken once they leave", "readers", len(readers))
		return judgement{verdict: takeOver}, nil
	case len(readers) > 0:
		return judgement{verdict: held, refusal: l.readersBlock(readers, remnantWhy(0), l.nameWho()), transient: true}, nil
	}
	// Being created by another contender, which is about to write it.
	return judgement{verdict: held, holder: &AlreadyRunningError{Path: l.path, Reason: "the holder keeps the kernel lock"}, transient: true}, nil
}

// writeInPlace empties f, the PID file, then writes data: a crash in
// between leaves a crash remnant (empty, or a prefix of data), which is
// judged stale; a write over longer old content would leave its tail
// behind.
func (l *Locker) writeInPlace(f File, data []byte) error {
	err := f.Truncate(0)
	if err == nil {
		_, err = f.WriteAt(data, 0)
	}
	if err != nil {
		return l.pathError("write", err)
	}
	return nil
}

// onlyReaders returns the pids of the shared flocks on the file fi
// describes when no exclusive one holds it, and reports whether this
// Locker holds the lock's names, so that no other contender of this host
// is at the file: readers then never block a start. Only where the kernel
// lists lock owners.
func (l *Locker) onlyReaders(fi fs.FileInfo) ([]int, bool) {
	if !l.kernel {
		return nil, false
	}
	writers, readers, err := flockOwners(fi)
	if err != nil || len(writers) > 0 {
		return nil, false
	}
	return readers, len(readers) > 0 && l.nameHeld.Load()
}
