package instancelock

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"time"
)

// This file holds the watching of a held lock: the tenure's timer (and on
// Linux its inotify watch, see holdwatch_linux.go) checks that the held
// file is still at the path, re-publishes it when it is not, and reports
// the loss when that fails.

// lockWhenReadersLeave takes the exclusive flock of f, the tenure's file
// written in place while only shared locks (readers, a squatter) held it,
// once they leave: it tries every few milliseconds to 100 ms until it gets
// it, the tenure ends or its file changes. Until then the lock rests on its
// names (this host); if another process takes the file's lock first (one
// of another network namespace sharing the volume), the tenure is lost.
func (l *Locker) lockWhenReadersLeave(t *tenure, f File, done <-chan struct{}) {
	pause := time.Millisecond
	for {
		select {
		case <-done:
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, 100*time.Millisecond)
		t.wmu.Lock()
		if t.stopped || t.f != f || t.err.Load() != nil {
			t.wmu.Unlock()
			return
		}
		err := f.TryLock()
		if errors.Is(err, ErrWouldBlock) {
			st, serr := f.Stat()
			if serr == nil {
				if writers, _, lerr := flockOwners(st); lerr == nil && len(writers) == 0 {
					t.wmu.Unlock()
					continue // readers still there
				}
			}
			err = fmt.Errorf("another process took its lock before this holder could: %w", err)
		}
		if err == nil {
			l.log.Info("the readers of the PID file left; it is locked now")
		} else {
			err = &fs.PathError{Op: "lock", Path: l.path, Err: fmt.Errorf("%w: %w", ErrLockLost, l.cause(err))}
			t.err.Store(&err)
			l.log.Error("lock lost: another instance may start", "err", err)
			close(t.lost)
		}
		t.wmu.Unlock()
		return
	}
}

// armAfter is when a holding arms its inotify watch and registers its
// socket with the watcher: a tenure shorter than that (a quick job) costs
// no watcher work at all, and a change made before is seen by the check
// that follows the arming.
const armAfter = 10 * time.Millisecond

// hold records a new tenure and starts the watcher: a timer that checks
// the file every interval and, on Linux, an inotify watch of the file and
// its directory that runs the same check at once on any event that may
// concern the file (see holdwatch_linux.go), armed armAfter after the
// acquisition. names are the lock's names held (Linux); the watcher also
// drains their sockets' connections.
func (l *Locker) hold(p published, info ProcessLock, data []byte, names heldNames) {
	t := &tenure{f: p.f, fi: p.fi, info: info, lost: make(chan struct{}), tmp: p.leftover, inPlace: p.inPlace && l.byRename, heldNames: names, wds: [2]int32{-1, -1}, data: data}
	l.t = t
	l.last.Store(t)
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug("lock acquired", "pid", info.PID, "instanceId", info.InstanceID, "socket", names.sock >= 0, "realPathSocket", names.rsock >= 0)
	}
	first := l.watch
	if l.kernel || names.sock >= 0 || names.rsock >= 0 {
		if first <= 0 || first > armAfter {
			first = armAfter
		}
	}
	if first > 0 {
		t.wmu.Lock()
		t.timer = time.AfterFunc(first, func() { l.watchFile(t) })
		t.wmu.Unlock()
	}
}

// arm starts the inotify watch and registers the socket (Linux). The
// caller holds t.wmu.
func (l *Locker) arm(t *tenure) {
	t.armed = true
	if !l.kernel && t.sock < 0 && t.rsock < 0 {
		return
	}
	path := ""
	if l.watch > 0 {
		path = l.path
	}
	err := watchHeld(t, l.dir(), path, t.poke(l))
	if err != nil && !errors.Is(err, errors.ErrUnsupported) {
		l.log.Debug("no inotify watch: the file is checked every interval only", "err", err)
	}
}

// poke returns the function the inotify watcher calls on an event that
// may concern the held file: a check at once, in its own goroutine.
func (t *tenure) poke(l *Locker) func() {
	return func() { go l.watchFile(t) }
}

// watchFile runs every interval, and at once on a file event (Linux),
// while the lock is held: it checks that the held file is still at the
// path, re-publishes it when it is not (unless DisableRepublish), and re-arms the
// timer.
func (l *Locker) watchFile(t *tenure) {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.stopped || t.err.Load() != nil {
		return
	}
	if !t.armed {
		l.arm(t)
		if l.watch <= 0 {
			return
		}
	}
	// Check, and re-publish while the file is not ours: the check after a
	// re-publication sees a change made before its watch was in place.
	for republished := 0; ; republished++ {
		err := l.check(t, false)
		if err == nil {
			break
		}
		if l.keep && republished < maxAttempts {
			perr := l.republish(t)
			if perr == nil {
				l.log.Warn("the PID file was removed or replaced while this process holds the lock; re-published it", "why", err)
				continue
			}
			err = fmt.Errorf("%w; re-publishing failed: %w", err, l.cause(perr))
		}
		t.err.Store(&err)
		l.log.Error("lock lost: another instance may start", "err", err)
		close(t.lost)
		return
	}
	if t.timer != nil {
		t.timer.Reset(l.watch)
	}
}

// republish puts the tenure's PID file back at the path, with the same
// content, by the same protocol as TryLock. When the path now leads to
// another real file (a symbolic link on it was swapped), it first takes
// that file's name (and fails when another holder has it), and afterwards
// gives back the old one and removes its old file. It fails when another
// process holds the file now at the path. The caller holds t.wmu.
func (l *Locker) republish(t *tenure) error {
	if t.sock >= 0 {
		l.nameHeld.Store(true)
		defer l.nameHeld.Store(false)
	}
	moved := false
	rsock := -1
	rname, rdir := "", ""
	if t.rname != "" {
		if rname, rdir = l.realName(); rname != t.rname {
			moved = true
			if rname != l.name {
				var err error
				if rsock, _, err = l.claimName(rname); err != nil {
					return err
				}
			}
		}
	}
	p, err := l.publish(t.data)
	if err != nil {
		closeName(rsock)
		return err
	}
	old := t.f
	if moved {
		// The old file, at the old real path, is ours: remove it (a file
		// written in place is left: the directory may not let us).
		oldPath := filepath.Join(t.rdir, filepath.Base(l.path))
		if !t.inPlace && l.checkAt(t, oldPath, true) == nil {
			l.fsys.Remove(oldPath)
		}
		rewatchSock(t, t.rsock, rsock)
		closeName(t.rsock)
		t.rsock, t.rname, t.rdir = rsock, rname, rdir
	}
	t.f, t.inPlace, t.fi = p.f, p.inPlace && l.byRename, nil
	if p.leftover != "" {
		if t.tmp != "" {
			l.fsys.Remove(t.tmp)
		}
		t.tmp = p.leftover
	}
	old.Close() // the old inode is elsewhere or unlinked: its lock goes with it
	if p.inPlace && l.kernel && errors.Is(p.f.TryLock(), ErrWouldBlock) {
		l.lockLater(t)
	}
	if l.watch > 0 {
		rewatchHeld(t, l.dir(), l.path, t.poke(l))
	}
	return nil
}

// lockLater starts lockWhenReadersLeave for t's file. The caller holds
// t.wmu.
func (l *Locker) lockLater(t *tenure) {
	if t.readersGone == nil {
		t.readersGone = make(chan struct{})
	}
	go l.lockWhenReadersLeave(t, t.f, t.readersGone)
}

// stopWatch stops the watcher; when it returns, no check is running and
// none will run.
func (t *tenure) stopWatch() {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if !t.stopped && t.readersGone != nil {
		close(t.readersGone)
	}
	t.stopped = true
	if t.timer != nil {
		t.timer.Stop()
	}
}

// check returns an error matching ErrLockLost if the file at the path is no
// longer the one t holds, or (Linux) the path now leads to another real
// directory (a symbolic link on it was swapped). When it cannot tell (a
// stat fails), it returns nil unless strict, when it returns the failure:
// Unlock removes the path only when it is sure the file there is its own.
func (l *Locker) check(t *tenure, strict bool) error {
	if t.rname != "" {
		if rname, rdir := l.realName(); rname != t.rname {
			return &fs.PathError{Op: "watch", Path: l.path, Err: fmt.Errorf("%w: the path now leads to directory %s, not %s (a symbolic link on it was changed)", ErrLockLost, rdir, t.rdir)}
		}
	}
	return l.checkAt(t, l.path, strict)
}

// checkAt is check of the file at path only.
func (l *Locker) checkAt(t *tenure, path string, strict bool) error {
	mine, err := t.fi, error(nil)
	if mine == nil {
		mine, err = t.f.Stat()
	}
	if err != nil {
		if strict {
			return err
		}
		return nil // cannot tell; try again next time
	}
	now, err := l.fsys.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &fs.PathError{Op: "watch", Path: path, Err: fmt.Errorf("%w: the PID file was removed", ErrLockLost)}
	case err != nil:
		if strict {
			return err
		}
		return nil
	case !l.fsys.SameFile(mine, now):
		return &fs.PathError{Op: "watch", Path: path, Err: fmt.Errorf("%w: the PID file was replaced", ErrLockLost)}
	}
	return nil
}
