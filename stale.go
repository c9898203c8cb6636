package instancelock

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"
)

// This file holds the judgement of a PID file found at the path: held by
// a live process, stale (its process is gone, or it is what a crash
// leaves), changed under us, or someone's file. TryLock, Running,
// CleanStale and so every front end judge by these functions.

// verdict is what judgeLocked decides about the file at the path: the
// next step of the file protocol.
type verdict int

const (
	// takeOver: the file's kernel lock is ours now (or only readers hold
	// it, see judgeSharedOnly), the file is still at the path, and what it
	// says is stale: the caller may replace it or write over it.
	takeOver verdict = iota
	// changed: the file was removed or replaced meanwhile: look again.
	changed
	// held: a live process holds the lock (judgement.holder says who).
	held
)

// judgement is judgeLocked's decision.
type judgement struct {
	verdict verdict
	holder  *AlreadyRunningError // held: who, as far as known
	// refusal, when set, is the error of a refusal instead of holder: no
	// process holds the lock, but starts cannot safely take it (see
	// readersBlock).
	refusal error
	// transient: held, by a file whose content looks stale (a stale file
	// being replaced, a reader of a moment): look again shortly.
	transient bool
}

// attempt is what j, a judgement other than takeOver, means for an
// attempt to publish: look again, or refused by its holder.
func (j judgement) attempt() attempt {
	if j.verdict == held {
		a := attempt{try: refused, refusal: j.refusal, transient: j.transient}
		if j.refusal == nil {
			a.refusal = j.holder
		}
		return a
	}
	return attempt{try: again}
}

// judgeLocked tries to take the kernel lock of f, opened at the path, and
// judges the file: held by another process (judgeHeld), or, once its lock
// is ours, stale or not (judgeUnlocked).
func (l *Locker) judgeLocked(f File) (judgement, error) {
	st, err := f.Stat()
	if err != nil {
		return judgement{}, err
	}
	if err := l.checkMode(st); err != nil {
		return judgement{}, err
	}
	data, _ := readLimited(f) // a failed read leaves content that does not parse
	switch err := f.TryLock(); {
	case errors.Is(err, ErrWouldBlock):
		return l.judgeHeld(st, data)
	case err != nil:
		return judgement{}, err
	}
	return l.judgeUnlocked(f, st)
}

// judgeHeld judges the file st describes, whose kernel lock another open
// file holds; data is its content, read before the attempt to lock it.
func (l *Locker) judgeHeld(st fs.FileInfo, data []byte) (judgement, error) {
	if now, err := l.fsys.Lstat(l.path); err != nil || !l.fsys.SameFile(st, now) {
		return judgement{verdict: changed}, nil // look at the new file
	}
	holder, perr := ParseProcessLock(data)
	are := &AlreadyRunningError{Path: l.path, Holder: holder, Reason: "the holder keeps the kernel lock"}
	// Content that looks stale (unreadable, a dead or reused pid of this
	// host) while the lock is held: a stale file being replaced, or a
	// momentary reader (Running on platforms without /proc/locks).
	j := judgement{verdict: held, holder: are, transient: perr != nil || l.staleLooking(holder)}
	if !l.kernel {
		are.Proven = perr == nil && holder.StartToken != "" && l.sameHost(holder) && l.tokenMatches(holder)
		return j, nil
	}
	writers, readers, err := flockOwners(st)
	switch {
	case err != nil:
	case len(writers) == 0 && len(readers) > 0 && l.nameHeld.Load():
		return l.judgeSharedOnly(st, data, len(readers))
	case len(writers) == 0 && len(readers) > 0:
		return l.judgeReadersOnly(st, data, readers)
	default:
		if sj, ok := l.judgeSquatted(writers, data, st.ModTime()); ok {
			return sj, nil
		}
		l.prove(are, writers)
	}
	return j, nil
}

// judgeSharedOnly judges a file that only shared locks hold (readers, or
// a squatter who opened it for reading and holds LOCK_SH) while this
// Locker holds the lock's names, so that no other contender of this host
// is at the file: its content decides, and a stale file is replaced by
// renaming ours over it (the squatter keeps the old inode).
func (l *Locker) judgeSharedOnly(st fs.FileInfo, data []byte, readers int) (judgement, error) {
	holder, isStale, why, err := l.judge(data, st.ModTime())
	switch {
	case err != nil:
		return judgement{}, err // someone's file: never replaced
	case !isStale:
		return judgement{verdict: held, holder: &AlreadyRunningError{Path: l.path, Holder: holder, Reason: why, Unlocked: true}}, nil
	}
	l.log.Warn("the PID file is held by shared locks only (readers, or someone squatting it); replacing it", "readers", readers)
	return judgement{verdict: takeOver}, nil
}

// judgeReadersOnly judges a file that only shared locks hold while this
// Locker holds no name (another user's socket has it, see claimName): no
// process holds the lock, but without the name nothing keeps another
// contender of this host away while the file is replaced, so a stale file
// is refused with an error that says what blocks the start (readersBlock),
// never as "already running". The refusal is transient: a reader of a
// moment is gone when publish looks again.
func (l *Locker) judgeReadersOnly(st fs.FileInfo, data []byte, readers []int) (judgement, error) {
	holder, isStale, why, err := l.judge(data, st.ModTime())
	switch {
	case err != nil:
		return judgement{}, err // someone's file
	case !isStale:
		return judgement{verdict: held, holder: &AlreadyRunningError{Path: l.path, Holder: holder, Reason: why, Unlocked: true}}, nil
	}
	return judgement{verdict: held, refusal: l.readersBlock(readers, why, l.nameWho()), transient: true}, nil
}

// readersBlock is the error of a start that shared locks alone block
// while the lock's name is not this Locker's (a contender that holds the
// name takes such a file over: judgeSharedOnly, claimEmpty). TryLock and
// Running give it alike. It matches ErrWouldBlock, not ErrAlreadyRunning:
// no instance runs.
//
// why says why the file is stale, name who has the lock's name.
func (l *Locker) readersBlock(readers []int, why, name string) error {
	pids := make([]string, len(readers))
	for i, pid := range readers {
		pids[i] = strconv.Itoa(pid)
		if pid == 0 {
			pids[i] = "? (another PID namespace)"
		}
	}
	return l.startsBlocked(why, fmt.Sprintf(
		"shared locks hold the file (pid %s: readers, or someone keeping the service down; see /proc/locks) and %s, so a start cannot keep other starts out while it takes the file over",
		strings.Join(pids, ", "), name), "those processes")
}

// writerBlock is the error of a start that an exclusive flock blocks
// whose owner, pid (of user uid), is not an instance (see squatWriter):
// any process that can open the PID file, even read-only, can take that
// lock. TryLock and Running give it alike; like readersBlock's, it
// matches ErrWouldBlock, not ErrAlreadyRunning. why says why the file is
// stale.
func (l *Locker) writerBlock(pid, uid int, why string) error {
	return l.startsBlocked(why, fmt.Sprintf(
		"pid %d (uid %d), which is not an instance (it is not the process the file names and has not the lock's name), holds an exclusive flock on the file (see /proc/locks; any user who can open the file can take one, even read-only)",
		pid, uid), "that process (and, where local users are not trusted, keep the PID file unreadable to them: mode 0640 with an operators' group, or 0600)")
}

// startsBlocked is the one form of the errors of a start refused by a
// process that is not an instance (readersBlock, writerBlock): why the
// file is stale, what blocks the start, and who to stop.
func (l *Locker) startsBlocked(why, what, who string) error {
	return &fs.PathError{Op: "lock", Path: l.path, Err: fmt.Errorf(
		"no instance holds the lock (%s), but %s; stop %s, then start again: %w", why, what, who, ErrWouldBlock)}
}

// squatWriter returns the owner of the exclusive flock among writers (of
// the file at the path) and its uid when it is not an instance: it is not
// the pid that h, the file's content, names (h is of this PID space, or
// names none: a pid of another PID namespace cannot be compared), and it
// is in this process's network
// namespace (see netPeerOf), where, while the lock's names are this
// Locker's (TryLock) or free (Running), no instance can be at the file:
// an instance takes the names before the file and keeps them until it has
// let it go. A writer in another network namespace (a container sharing
// the volume) may be an instance, and so may one whose namespace cannot
// be read: ok is false for them.
func (l *Locker) squatWriter(writers []int, h ProcessLock) (pid, uid int, ok bool) {
	if len(writers) != 1 || writers[0] <= 0 || writers[0] == h.PID || !l.comparable(h) {
		return 0, 0, false
	}
	uid, ok = netPeerOf(writers[0])
	return writers[0], uid, ok
}

// comparable reports whether h's pid, from a PID file, can be compared
// with a pid /proc/locks shows: h names none, or a pid of this PID space.
func (l *Locker) comparable(h ProcessLock) bool { return h.PID <= 0 || l.sameHost(h) }

// judgeSquatted judges a file whose exclusive flock is held by a process
// that is not an instance (squatWriter) while this Locker holds the
// lock's names: a stale file (data, modified at mod) is refused with
// writerBlock's error, not as "already running". The refusal is
// transient: publish looks again (an instance that took the file without
// its names, because another user's socket had them, is the file's pid as
// soon as it has written it). ok is false for any other file.
func (l *Locker) judgeSquatted(writers []int, data []byte, mod time.Time) (judgement, bool) {
	if !l.kernel || !l.nameHeld.Load() {
		return judgement{}, false
	}
	holder, isStale, why, err := l.judge(data, mod)
	if err != nil || !isStale {
		return judgement{}, false
	}
	pid, uid, ok := l.squatWriter(writers, holder)
	if !ok {
		return judgement{}, false
	}
	return judgement{verdict: held, refusal: l.writerBlock(pid, uid, why), transient: true}, true
}

// nameWho says who has a name this Locker's start could not take.
func (l *Locker) nameWho() string {
	if p := l.noName.Load(); p != nil && *p != "" {
		return *p
	}
	return "the lock's name is not available to this process (see the log)"
}

// judgeUnlocked judges f, whose kernel lock the caller has just taken:
// still at the path, and stale.
func (l *Locker) judgeUnlocked(f File, st fs.FileInfo) (judgement, error) {
	now, err := l.fsys.Lstat(l.path)
	switch {
	case errors.Is(err, fs.ErrNotExist) || (err == nil && !l.fsys.SameFile(st, now)):
		return judgement{verdict: changed}, nil
	case err != nil:
		return judgement{}, err
	}
	// Read again under the lock: the first read may predate a rewrite. A
	// file that cannot be read cannot be judged: it may be someone's data.
	data, err := readAt0(f)
	if err != nil {
		return judgement{}, l.pathError("read", err)
	}
	holder, isStale, why, err := l.judge(data, st.ModTime())
	switch {
	case err != nil:
		return judgement{}, err
	case !isStale:
		return judgement{verdict: held, holder: &AlreadyRunningError{Path: l.path, Holder: holder, Reason: why, Unlocked: true}}, nil
	}
	l.log.Info("taking over a stale lock", "holder", holder.String(), "why", why)
	return judgement{verdict: takeOver}, nil
}

// judge decides whether an unlocked PID file is stale. Content that is
// not a PID file is judged by classify: a crash remnant is stale, anything
// else is someone's file and judge returns an error matching
// ErrForeignFile. Files written by this package are always held under a
// kernel lock while their process lives, so an unlocked one is stale; the
// PID checks only matter for files from other tools that do not take the
// kernel lock (the legacy bare-PID format, say) and are done only for files
// of this host.
func (l *Locker) judge(data []byte, mod time.Time) (ProcessLock, bool, string, error) {
	holder, kind := classify(data)
	switch kind {
	case contentRemnant:
		return holder, true, remnantWhy(len(data)), nil
	case contentForeign:
		return holder, false, "", l.foreign(data)
	}
	stale, why := l.judgeHolder(holder, mod)
	return holder, stale, why, nil
}

// remnantWhy is why a crash remnant of n bytes is stale.
func remnantWhy(n int) string { return fmt.Sprintf("what a crash left of a PID file (%d bytes)", n) }

// foreign is the error about content that is not a PID file.
func (l *Locker) foreign(data []byte) error {
	what := "more than " + strconv.Itoa(MaxFileSize) + " bytes"
	if len(data) <= MaxFileSize {
		head := data[:min(len(data), 24)]
		what = fmt.Sprintf("%d bytes beginning %q", len(data), head)
	}
	return &fs.PathError{Op: "lock", Path: l.path, Err: fmt.Errorf(
		"%w, nor what a crash leaves of one (%s): it may be someone's data, so it is left as it is; choose another PID file path, or remove the file if it really is a leftover",
		ErrForeignFile, what)}
}

// judgeHolder judges a parsed PID file that no process locks: the one
// liveness rule of the package, behind TryLock, Running, CleanStale and so
// behind every front end (instancelock status, stop, run). A file in this
// package's JSON format is stale whatever process it names: it is written
// only under the kernel lock, which dies with its process, so an unlocked
// one was left by a holder that is gone, or copied, or forged. A bare PID
// (the legacy format, from tools that take no lock) of this host is in use
// while its process lives and is not newer than the file.
func (l *Locker) judgeHolder(holder ProcessLock, mod time.Time) (bool, string) {
	stale, why := l.judgePID(holder, mod)
	if !stale && !holder.StartedAt.IsZero() {
		return true, why + ", but it does not hold the lock, which is free (a PID file in this format is written only under the lock: a copy, a forgery, or a holder that lost its file)"
	}
	return stale, why
}

// judgePID tells whether the process a PID file names is gone: dead, or
// its pid reused (start token, or start time after the file was written).
func (l *Locker) judgePID(holder ProcessLock, mod time.Time) (bool, string) {
	if !l.sameHost(holder) {
		return true, "written on host " + holder.Hostname + " (another machine, boot or PID namespace) and its kernel lock is free"
	}
	if holder.PID == os.Getpid() {
		return true, "it names this process's own pid, which did not write it (a previous run in a restarted container?)"
	}
	written := holder.StartedAt
	if written.IsZero() {
		written = mod
	}
	return processGone(l.procs, holder, written)
}

// processGone is the package's one answer to "is pid N still the process
// that wrote this?": no when the pid is not alive (a zombie is dead), or
// belongs to another process (start token differs; without a token,
// started more than 2 s after written, when written is known). It says
// why. A failed probe, or a live process whose start cannot be read, is
// not gone. Used by the Locker's judgement of an unlocked file and by
// ProcessLock.Gone (pglock's judgement of a previous holder).
func processGone(procs ProcessTable, holder ProcessLock, written time.Time) (bool, string) {
	alive, err := procs.Alive(holder.PID)
	if err != nil {
		return false, "could not probe the process: " + err.Error()
	}
	if !alive {
		return true, fmt.Sprintf("process %d is not running", holder.PID)
	}
	token, at, err := procs.Start(holder.PID)
	if err != nil {
		return false, fmt.Sprintf("process %d is alive", holder.PID)
	}
	if holder.StartToken != "" {
		if token != holder.StartToken {
			return true, fmt.Sprintf("pid %d now belongs to another process (start token %s, not %s)", holder.PID, token, holder.StartToken)
		}
		return false, fmt.Sprintf("process %d that wrote the file is alive", holder.PID)
	}
	if !written.IsZero() && at.After(written.Add(2*time.Second)) {
		return true, fmt.Sprintf("pid %d now belongs to a process started at %s, after the file was written at %s",
			holder.PID, at.UTC().Format(timeLayout), written.UTC().Format(timeLayout))
	}
	return false, fmt.Sprintf("process %d is alive", holder.PID)
}

// Gone reports whether the process pl describes is known to have ended:
// pl was written in this PID space (Local) by another process, and its
// pid is no longer alive or now belongs to a process started after pl was
// written (start token, or startedAt). It is false when that cannot be
// told (another PID space, this process, a failed probe). It is the rule
// the Locker judges an unlocked PID file by (see docs/design.md), for
// other lock front ends (pglock) that keep a ProcessLock elsewhere.
func (pl ProcessLock) Gone() bool {
	if pl.PID <= 0 || pl.PID == os.Getpid() || !pl.Local() {
		return false
	}
	gone, _ := processGone(osProcesses{}, pl, pl.StartedAt)
	return gone
}

// sameHost reports whether h's PID may be probed from here: h is in this
// process's PID space (see ProcessLock.Local).
func (l *Locker) sameHost(h ProcessLock) bool { return sameSpace(h, l.pidSpace, l.hostname) }
