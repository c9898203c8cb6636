package instancelock

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

// This file holds what the Locker offers about a lock it does not hold:
// who holds it (Holder, Running), removing a stale PID file (CleanStale)
// and stopping the holder (Terminate).

// Holder reads the PID file and returns its content. The error matches
// ErrNotRunning (and fs.ErrNotExist) when there is no file, and
// ErrInvalidLock when the content is not a PID file: it also matches
// ErrForeignFile when the content is not even what a crash leaves of one
// (a crash remnant matches ErrInvalidLock only). Holder does not say
// whether the holder is alive; Running does.
func (l *Locker) Holder() (ProcessLock, error) {
	if err := l.setup(); err != nil {
		return ProcessLock{}, err
	}
	f, err := l.openForRead()
	if err != nil {
		return ProcessLock{}, err
	}
	defer f.Close()
	data, err := readLimited(f)
	if err != nil {
		return ProcessLock{}, l.pathError("read", err)
	}
	pl, kind := classify(data)
	switch kind {
	case contentForeign:
		_, perr := ParseProcessLock(data)
		return ProcessLock{}, &fs.PathError{Op: "parse", Path: l.path, Err: fmt.Errorf("%w (%w)", ErrForeignFile, perr)}
	case contentRemnant:
		_, perr := ParseProcessLock(data)
		return ProcessLock{}, &fs.PathError{Op: "parse", Path: l.path, Err: fmt.Errorf("what a crash left of a PID file: %w", perr)}
	}
	return pl, nil
}

func (l *Locker) openForRead() (File, error) {
	fi, err := l.fsys.Lstat(l.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &fs.PathError{Op: "open", Path: l.path, Err: fmt.Errorf("%w (%w)", ErrNotRunning, fs.ErrNotExist)}
	}
	if err != nil {
		return nil, err
	}
	if err := l.checkMode(fi); err != nil {
		return nil, err
	}
	f, err := l.fsys.OpenFile(l.path, os.O_RDONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &fs.PathError{Op: "open", Path: l.path, Err: fmt.Errorf("%w (%w)", ErrNotRunning, fs.ErrNotExist)}
	}
	return f, err
}

// Running reports whether a live process holds the lock, with its
// ProcessLock. A PID file left by a dead process, or a crash remnant, is
// reported as not running (and left in place: see CleanStale); a foreign
// file that no process locks is an error matching ErrForeignFile. This
// Locker's own holding counts as running. The kernel says who holds (on
// Linux /proc/locks and the lock's socket: a holder whose file was removed
// is running, its ProcessLock then has the pid and start time the kernel
// gives). A file that no process holds is judged as TryLock judges it
// (one rule for every front end): stale, so not running — which includes
// a file in this package's format naming a live process that does not
// hold the lock — or, for a bare PID naming a live process of this host
// that takes no lock (another tool's file), not running and an
// *AlreadyRunningError with Unlocked set: TryLock refuses to start while
// that process lives. Running takes no lock on Linux (but in a PID
// namespace other than the initial one, whose /proc/locks does not list
// the locks of processes outside it, a file shown unlocked is checked by
// a shared lock taken for an instant); elsewhere it takes a
// shared lock for an instant.
func (l *Locker) Running() (ProcessLock, bool, error) {
	if err := l.setup(); err != nil {
		return ProcessLock{}, false, err
	}
	if info, ok := l.Info(); ok {
		return info, true, nil
	}
	if l.kernel {
		return l.runningByKernel()
	}
	return l.runningByLock()
}

// runningByKernel is Running where the kernel names the lock's owners.
//
// Where /proc/locks does not list every process's locks (a reader in a
// container with its own PID namespace), a file it shows unlocked is
// checked by trying its lock for an instant, as on other platforms: a
// holder outside the reader's namespace (the host, another container
// sharing the volume) is running, with the ProcessLock of its file.
//
// A stale file that only shared locks hold while a process that cannot be
// our holder has the lock's name is what starts refuse with the error of
// readersBlock (see judgeReadersOnly): Running returns that error too. So
// is a stale file whose exclusive flock a process that is not an instance
// holds while the lock's names are free (writerBlock, see squatted).
func (l *Locker) runningByKernel() (ProcessLock, bool, error) {
	s, err := l.look()
	if err == nil && !s.held && s.file && !seesAllLocks() && l.lockedNow() {
		s.held = true
	}
	if err == nil {
		if err := l.squatted(s); err != nil {
			return s.content, false, err
		}
	}
	if err != nil || s.held || !s.file || s.kind == contentForeign {
		return s.holder, s.held, err
	}
	isStale, why := true, remnantWhy(s.size)
	if s.kind == contentLock {
		isStale, why = l.judgeHolder(s.holder, s.mod)
	}
	if isStale && len(s.readers) > 0 {
		if who, squatted := l.nameSquatter(); squatted {
			return s.holder, false, l.readersBlock(s.readers, why, who)
		}
	}
	if s.kind != contentLock {
		return s.holder, false, nil
	}
	return l.unheld(s.holder, isStale, why)
}

// runningByLock is Running elsewhere: a shared lock taken for an instant
// tells whether a holder exists, and does not look like a holder to
// another reader.
func (l *Locker) runningByLock() (ProcessLock, bool, error) {
	f, err := l.openForRead()
	if errors.Is(err, ErrNotRunning) {
		return ProcessLock{}, false, nil
	}
	if err != nil {
		return ProcessLock{}, false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ProcessLock{}, false, err
	}
	data, _ := readLimited(f)
	err = f.TryRLock()
	if errors.Is(err, ErrWouldBlock) {
		holder, _ := ParseProcessLock(data)
		return holder, true, nil
	}
	if err != nil {
		return ProcessLock{}, false, err
	}
	holder, isStale, why, err := l.judge(data, st.ModTime())
	if err != nil {
		return ProcessLock{}, false, err
	}
	return l.unheld(holder, isStale, why)
}

// unheld is Running's answer for a PID file that no process holds, judged
// as TryLock judges it: not running, and, when it is not stale (a bare PID
// naming a live process of this host that takes no lock), an
// *AlreadyRunningError with Unlocked set, since starts refuse it.
func (l *Locker) unheld(holder ProcessLock, isStale bool, why string) (ProcessLock, bool, error) {
	if !isStale {
		return holder, false, &AlreadyRunningError{Path: l.path, Holder: holder, Reason: why, Unlocked: true}
	}
	return holder, false, nil
}

// lockedNow reports whether some open file holds the lock of the file at
// the path (a shared lock taken for an instant and dropped). For
// platforms without /proc/locks.
func (l *Locker) lockedNow() bool {
	f, err := l.openForRead()
	if err != nil {
		return false
	}
	defer f.Close()
	return errors.Is(f.TryRLock(), ErrWouldBlock)
}

// CleanStale removes the PID file if it is stale (see TryLock), and
// reports whether it did. A file held by a live process is kept, and so is
// a file this Locker holds; a foreign file is kept and reported with an
// error matching ErrForeignFile. An empty file is kept: it is what a
// release in place leaves, and the next start takes it over anyway. A
// stale file of another user than this process's (a PID file prepared for
// the service user, cleaned by root) is emptied, not removed, as a start
// of this process would leave it (see TryLock).
func (l *Locker) CleanStale() (bool, error) {
	if err := l.setup(); err != nil {
		return false, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.t != nil {
		return false, nil
	}
	var last error
	for range maxAttempts {
		removed, again, err := l.cleanOnce()
		if !again {
			return removed, err
		}
		last = err
	}
	if last != nil {
		return false, last // what blocks it (see readersBlock)
	}
	return false, &fs.PathError{Op: "clean", Path: l.path, Err: errContended}
}

// cleanOnce is one try of CleanStale: it judges the file at the path as
// TryLock does and removes it when stale. again asks for another try: the
// file changed meanwhile, or is in use for a moment.
func (l *Locker) cleanOnce() (removed, again bool, err error) {
	f, err := l.fsys.OpenFile(l.path, os.O_RDONLY, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, false, nil
	case err != nil:
		return false, false, l.openError(err)
	}
	j, err := l.judgeLocked(f)
	if err != nil || j.verdict != takeOver {
		f.Close()
		if j.transient {
			time.Sleep(time.Millisecond)
		}
		if err == nil && j.refusal != nil {
			err = j.refusal
		}
		return false, j.verdict == changed || j.transient, err
	}
	// We hold the kernel lock of the stale file, and it is at the path.
	st, err := f.Stat()
	switch {
	case err == nil && st.Size() == 0:
		// An empty file is what a release in place leaves (a PID file
		// prepared for the service in a directory it cannot write):
		// nothing in it is stale, and removing it would lock the service
		// out of its next start.
		f.Close()
		return false, false, nil
	case err == nil && l.byRename && otherOwner(st):
		// Another user's (prepared for the service user): emptied in
		// place, under the lock f holds, so that it keeps its owner; one
		// this user may not write is removed, as any stale file.
		if w, err := l.fsys.OpenFile(l.path, os.O_WRONLY, 0); err == nil {
			err = w.Truncate(0)
			w.Close()
			f.Close()
			if err != nil {
				return false, false, l.pathError("truncate", err)
			}
			return true, false, nil
		}
	}
	return l.removeStale(f)
}

// removeStale removes the stale PID file f, whose kernel lock this Locker
// holds and which is at the path, and closes f.
func (l *Locker) removeStale(f File) (removed, again bool, err error) {
	if l.byRename {
		err = l.fsys.Remove(l.path)
		f.Close()
	} else {
		// Windows: a file open without FILE_SHARE_DELETE (Go opens every
		// file so) cannot be deleted, not even through our own handle, so
		// close first. A contender (or a reader) that opens the file in
		// between keeps it: its open handle makes the removal fail with a
		// sharing violation, and the next round judges the file again.
		f.Close()
		err = l.fsys.Remove(l.path)
		if isSharingViolation(err) {
			time.Sleep(time.Millisecond)
			return false, true, nil
		}
	}
	if err != nil {
		return false, false, l.pathError("remove", err)
	}
	return true, false, nil
}

// Terminate sends sig (nil means SIGTERM; os.Kill on Windows) to the process
// that holds the lock, only when it is proven to hold it: on Linux the
// kernel names it (/proc/locks or SO_PEERCRED on the lock's socket), its
// start token matches the file's, and the signal goes through a pidfd;
// elsewhere the file's lock is held, its pid alive and its start token
// matching. It refuses with an error matching ErrNotRunning when no live
// process holds the lock — which includes a PID file naming a live process
// that does not hold it ("pid N is alive but does not hold the lock") and
// a pid that now belongs to another process — so it never signals a
// stranger; with an *AlreadyRunningError (ErrAlreadyRunning) when the lock
// is held by a process it cannot prove to be the holder, or by one on
// another host or in another PID namespace; with ErrAlreadyHeld when this
// process holds the lock. It does not wait for the process to exit.
func (l *Locker) Terminate(sig os.Signal) error {
	if err := l.setup(); err != nil {
		return err
	}
	if sig == nil {
		sig = defaultSignal
	}
	if l.kernel {
		if _, held := l.Info(); held {
			return l.refusal("", ErrAlreadyHeld)
		}
		return l.terminateProven(sig)
	}
	// Without a kernel table of lock owners: the file's lock must be held
	// (a file naming a live process is not enough), its pid alive, and its
	// start token, where the platform has one, the live process's.
	holder, running, err := l.Running()
	if are := (*AlreadyRunningError)(nil); errors.As(err, &are) && are.Unlocked {
		return l.refusal(fmt.Sprintf("pid %d is alive but does not hold the lock", are.Holder.PID), ErrNotRunning)
	}
	switch {
	case err != nil:
		return err
	case !running:
		return l.refusal("", ErrNotRunning)
	case holder.PID > 0 && !l.lockedNow():
		return l.refusal(fmt.Sprintf("pid %d is alive but does not hold the lock", holder.PID), ErrNotRunning)
	case holder.PID <= 0:
		return l.refusal("it is locked, but the file does not say by which process",
			&AlreadyRunningError{Path: l.path, Holder: holder, Reason: "the holder keeps the kernel lock"})
	case !l.sameHost(holder):
		return l.refusal("its holder runs on another host or in another PID namespace",
			&AlreadyRunningError{Path: l.path, Holder: holder, Reason: "the holder keeps the kernel lock"})
	case holder.PID == os.Getpid():
		return l.refusal("", ErrAlreadyHeld)
	}
	if holder.StartToken != "" {
		if token, _, err := l.procs.Start(holder.PID); err == nil && token != holder.StartToken {
			return l.refusal(fmt.Sprintf("pid %d no longer belongs to the holder", holder.PID), ErrNotRunning)
		}
	}
	if err := l.procs.Signal(holder.PID, sig); err != nil {
		return l.signalError(err)
	}
	l.log.Info("signalled the holder", "pid", holder.PID, "signal", sig.String())
	return nil
}
