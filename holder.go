package instancelock

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"time"
)

// This file holds the lock's outer protocol: the lock's second kernel
// object (an abstract Unix socket on Linux, see holder_linux.go), the
// proof of who holds the lock, and what readers look at. Readers never
// take or block a lock on Linux: they read /proc/locks and connect to the
// socket.

// heldNames are the lock's names a holding has (Linux): the name of the
// path as given and, when it differs, the name of the path's real file.
type heldNames struct {
	sock  int    // listening socket of the name of the path as given, -1 for none
	rsock int    // listening socket of rname when it differs from that name, -1 for none
	rname string // the real path's name when acquired ("" without names)
	rdir  string // the real directory rname was computed from
	// missing: who has a name that could not be taken (or why not), for
	// the error of a start that needs it (see readersBlock).
	missing string
}

// realDir is a cached result of realName (Linux): the real directory of
// the PID file, its lock name, and the identity of that directory.
type realDir struct {
	dev, ino  uint64
	name, dir string
}

// claimNames takes the lock's names: the name of the path as given, then
// that of the path's real file (see realName). A contender must
// get both, so the same path string is refused after a symbolic link on
// it was swapped, and two aliases of one file are refused too.
func (l *Locker) claimNames() (heldNames, error) {
	n := heldNames{sock: -1, rsock: -1}
	var err error
	if n.sock, n.missing, err = l.claimName(l.name); err != nil {
		return n, err
	}
	n.rname, n.rdir = l.realName()
	if n.rname == l.name {
		return n, nil
	}
	var missing string
	if n.rsock, missing, err = l.claimName(n.rname); err != nil {
		closeName(n.sock)
		return heldNames{sock: -1, rsock: -1}, err
	}
	if n.missing == "" {
		n.missing = missing
	}
	return n, nil
}

// all reports whether every name that n needs is held: no other contender
// of this host can be at the file.
func (n heldNames) all(given string) bool {
	return n.sock >= 0 && (n.rname == given || n.rsock >= 0)
}

func (n heldNames) close() {
	closeName(n.sock)
	closeName(n.rsock)
}

// namePeer returns the trusted process that listens on one of the lock's
// names (the path as given first, then its real path's), if any. It is
// never this process: while this Locker holds the names (a start, a
// republish) it looks at none, and a name this process listens on names
// no other holder.
func (l *Locker) namePeer() (peer, bool) {
	if l.name == "" || l.nameHeld.Load() {
		return peer{}, false
	}
	for _, name := range l.lockNames() {
		if p, err := peerOfName(name); err == nil && p.pid != os.Getpid() && l.trustedPeer(p) {
			return p, true
		}
	}
	return peer{}, false
}

// lockNames returns the lock's names as a reader sees them now: the name
// of the path as given, then that of its real path when it differs (see
// realName). None without names.
func (l *Locker) lockNames() []string {
	if l.name == "" {
		return nil
	}
	if rname, _ := l.realName(); rname != l.name {
		return []string{l.name, rname}
	}
	return []string{l.name}
}

// claimName takes one of the lock's names. It returns the listening
// socket, -1 and who has the name (or why it cannot be used) when it
// cannot be used (the lock then rests on the PID file's kernel lock
// alone, as on other platforms), or an *AlreadyRunningError when a process
// that may be our holder has it.
//
// A name that is bound but where nothing listens is, almost always, a
// contender between its bind and its listen (two system calls, between
// which it may be descheduled): ignoring it would let this contender take
// the PID file while that one holds the name, and then hold the lock
// without its name once the other gives up. So the name is tried again,
// with a backoff, for up to nameListenWait; only a name that stays bound
// without a listener that long (a socket that is not a holder's) is
// ignored.
func (l *Locker) claimName(name string) (int, string, error) {
	deadline := time.Now().Add(nameListenWait)
	for pause := 50 * time.Microsecond; ; pause = min(2*pause, 5*time.Millisecond) {
		fd, err := bindName(name)
		if err == nil {
			return fd, "", nil
		}
		if !errors.Is(err, errNameTaken) {
			l.log.Warn("the lock's socket is not available; relying on the PID file's lock alone", "err", err)
			return -1, "the lock's name cannot be used here (" + err.Error() + ")", nil
		}
		p, err := peerOfName(name)
		switch {
		case errors.Is(err, errNoListener):
			// A contender between bind and listen, a holder that just
			// left, or a socket that is not a holder's.
			if time.Now().Before(deadline) {
				time.Sleep(pause)
				continue
			}
			l.log.Warn("the lock's socket is bound by a socket that does not listen (not a holder); relying on the PID file's lock")
			return -1, "the lock's name is bound by a socket that does not listen (not a holder's)", nil
		case err != nil:
			l.log.Warn("the lock's socket is bound, but its owner cannot be identified; relying on the PID file's lock", "err", err)
			return -1, "the lock's name is bound by a process that cannot be identified from here", nil
		case !l.trustedPeer(p):
			l.log.Warn("the lock's socket is bound by a process that cannot be this lock's holder (another user, or a process that does not see this file system: another container sharing the network); ignoring it and relying on the PID file's lock",
				"uid", p.uid, "pid", p.pid)
			return -1, squatter(p), nil
		}
		holder, proven := l.peerHolder(p)
		return -1, "", &AlreadyRunningError{Path: l.path, Holder: holder, Proven: proven,
			Reason: fmt.Sprintf("pid %d holds the lock's socket", p.pid)}
	}
}

// squatter says who has the lock's name: p, which cannot be this lock's
// holder (see trustedPeer).
func squatter(p peer) string {
	return fmt.Sprintf("the lock's name is bound by pid %d (uid %d), which cannot be this lock's holder (another user, or another view of the file system)", p.pid, p.uid)
}

// nameListenWait is how long a name bound without a listener is taken
// for a contender about to listen.
const nameListenWait = 100 * time.Millisecond

// peerHolder describes the process p that holds the lock's socket: the
// PID file's content when it names p, else what the process table says.
func (l *Locker) peerHolder(p peer) (ProcessLock, bool) {
	if p.pid <= 0 {
		return ProcessLock{}, false // in another PID namespace
	}
	file, err := l.Holder()
	if err == nil && file.PID == p.pid {
		// The file names it: the file describes it (a holder on its way
		// out is no longer proven, but it is still the same holding).
		return file, l.tokenMatches(file)
	}
	h := ProcessLock{PID: p.pid}
	if token, at, err := l.procs.Start(p.pid); err == nil {
		h.StartToken, h.StartedAt = token, at.UTC()
	}
	// A PID file that names another process: the kernel's holder is
	// shown, but not proven against what the file claims. No PID file (or
	// an unreadable one): the name alone proves nothing (any process of
	// the user can bind it); the kernel must also show that p holds the
	// flock of the PID file, reached by the path or its real path, even
	// if it was removed since.
	return h, err != nil && l.holdsFlock(p.pid)
}

// tokenMatches reports whether h's process is alive and, when h carries a
// start token, still the process that wrote it.
func (l *Locker) tokenMatches(h ProcessLock) bool {
	if h.PID <= 0 {
		return false
	}
	if alive, err := l.procs.Alive(h.PID); err != nil || !alive {
		return false
	}
	if h.StartToken == "" {
		return true
	}
	token, _, err := l.procs.Start(h.PID)
	return err == nil && token == h.StartToken
}

// staleLooking reports whether h, found in a file whose lock is held,
// names a process of this host that cannot be its holder: dead, or its pid
// reused (start token differs).
func (l *Locker) staleLooking(h ProcessLock) bool {
	if h.PID <= 0 || !l.sameHost(h) || h.PID == os.Getpid() {
		return false
	}
	alive, err := l.procs.Alive(h.PID)
	if err != nil {
		return false
	}
	if !alive {
		return true
	}
	if h.StartToken == "" {
		return false
	}
	token, _, err := l.procs.Start(h.PID)
	return err == nil && token != h.StartToken
}

// sighting is what a reader sees of the lock, without taking it.
type sighting struct {
	holder ProcessLock // the holder: the file's content, or the kernel's pid when the file does not name it
	file   bool        // a PID file is at the path
	held   bool        // the kernel says a process holds the lock
	proven bool        // holder.PID is that process: named by the kernel, alive, start token matching
	how    string      // how held was learnt
	kind   contentKind // what the file holds (classify), when file is set
	mod    time.Time   // the file's modification time, when file is set
	// readers: the pids of the shared flocks on the file, when no
	// exclusive one holds it.
	readers []int
	size    int // the file's length, when file is set
	// writer: the owner of the exclusive flock when neither the file nor
	// the lock's name names it; holder is then that process, and content
	// what the file says (see flockHolder).
	writer  int
	content ProcessLock
}

// look reports who holds the lock, proven by the kernel: /proc/locks names
// the pid of the flock on the file at the path, SO_PEERCRED the pid of the
// lock's socket. It takes no lock. Only where l.kernel is set.
func (l *Locker) look() (sighting, error) {
	var s sighting
	var foreign error
	var writers []int
	f, err := l.openForRead()
	switch {
	case errors.Is(err, ErrNotRunning):
	case err != nil:
		return s, err
	default:
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return s, err
		}
		data, _ := readLimited(f)
		s.file, s.mod, s.size = true, st.ModTime(), len(data)
		var kind contentKind
		s.holder, kind = classify(data)
		s.kind = kind
		if kind == contentForeign {
			foreign = l.foreign(data)
		}
		var readers []int
		writers, readers, err = flockOwners(st)
		if err != nil {
			return s, &fs.PathError{Op: "look", Path: l.path, Err: fmt.Errorf("reading /proc/locks: %w", err)}
		}
		if len(writers) == 0 {
			s.readers = readers
		}
		if len(writers) > 0 {
			s.held, s.how = true, fmt.Sprintf("/proc/locks: pid %d holds the flock", writers[0])
			if slices.Contains(writers, s.holder.PID) && l.tokenMatches(s.holder) {
				s.proven = true
				return s, nil
			}
		}
	}
	p, ok := l.namePeer()
	if !ok {
		if s.held && !s.proven {
			l.flockHolder(&s, writers)
		}
		// Nothing holds the lock, or only its flock; a file that is not a
		// PID file is someone's, and reported as such.
		return s, foreign
	}
	s.held, s.how = true, fmt.Sprintf("pid %d holds the lock's socket", p.pid)
	s.holder, s.proven = l.peerHolder(p)
	return s, nil
}

// prove adds to an *AlreadyRunningError from the PID file's lock whether
// the kernel names its holder (Linux: /proc/locks, then the socket). When
// only /proc/locks names a process, and not the one the file names, that
// process is the holder shown, not proven.
func (l *Locker) prove(are *AlreadyRunningError, writers []int) {
	if slices.Contains(writers, are.Holder.PID) && l.tokenMatches(are.Holder) {
		are.Proven = true
		return
	}
	if p, ok := l.namePeer(); ok {
		are.Holder, are.Proven = l.peerHolder(p)
		return
	}
	if len(writers) == 1 && writers[0] > 0 && writers[0] != are.Holder.PID && l.comparable(are.Holder) {
		are.Holder, are.Reason = l.kernelHolder(writers[0]), fmt.Sprintf("/proc/locks: pid %d holds the flock", writers[0])
	}
}

// flockHolder makes s, a sighting of a file whose exclusive flock is held
// but not by the process the file names and with no holder on the lock's
// name, show the flock's owner as the holder (the file's content kept in
// s.content): the kernel's answer, not proven.
func (l *Locker) flockHolder(s *sighting, writers []int) {
	if len(writers) != 1 || writers[0] <= 0 || writers[0] == s.holder.PID || !l.comparable(s.holder) {
		return
	}
	s.writer, s.content = writers[0], s.holder
	s.holder = l.kernelHolder(writers[0])
}

// kernelHolder is the ProcessLock of pid as the process table describes
// it: a holder the kernel names but the PID file does not.
func (l *Locker) kernelHolder(pid int) ProcessLock {
	h := ProcessLock{PID: pid}
	if token, at, err := l.procs.Start(pid); err == nil {
		h.StartToken, h.StartedAt = token, at.UTC()
	}
	return h
}

// squatted is the error of Running and Terminate for s when its flock is
// held by a process that is not an instance (see squatWriter) while no
// process listens on the lock's names, and the file is stale: the error a
// start gets (writerBlock). It is nil otherwise.
func (l *Locker) squatted(s sighting) error {
	if s.writer <= 0 || s.kind == contentForeign {
		return nil
	}
	isStale, why := true, remnantWhy(s.size)
	if s.kind == contentLock {
		isStale, why = l.judgeHolder(s.content, s.mod)
	}
	if !isStale || !l.namesFree() {
		return nil
	}
	pid, uid, ok := l.squatWriter([]int{s.writer}, s.content)
	if !ok {
		return nil
	}
	return l.writerBlock(pid, uid, why)
}

// terminateProven is Terminate where the kernel can name the holder.
func (l *Locker) terminateProven(sig os.Signal) error {
	s, err := l.look()
	if err != nil {
		return fmt.Errorf("instancelock: terminate: %w", err) // err names the path
	}
	h := s.holder
	if err := l.squatted(s); err != nil {
		return fmt.Errorf("instancelock: terminate: %w", err) // err names the path
	}
	switch {
	case !s.held && h.PID > 0 && l.tokenMatches(h):
		return l.refusal(fmt.Sprintf("pid %d is alive but does not hold the lock", h.PID), ErrNotRunning)
	case !s.held:
		return l.refusal("", ErrNotRunning)
	case !s.proven:
		return l.refusal("the holder is not proven ("+s.how+")",
			&AlreadyRunningError{Path: l.path, Holder: h, Reason: s.how})
	case h.PID == os.Getpid():
		return l.refusal("", ErrAlreadyHeld)
	}
	err = signalPinned(h.PID, sig, func() error {
		again, err := l.look()
		if err != nil {
			return err
		}
		if !again.proven || again.holder.PID != h.PID {
			return fmt.Errorf("pid %d no longer holds the lock: %w", h.PID, ErrNotRunning)
		}
		return nil
	})
	if err != nil {
		return l.signalError(err)
	}
	l.log.Info("signalled the holder", "pid", h.PID, "signal", sig.String(), "proof", s.how)
	return nil
}

// signalError is Terminate's error when sending the signal failed (or
// the proof made again before it did): it matches ErrNotRunning when the
// process was gone, and names the path once.
func (l *Locker) signalError(err error) error {
	if errors.Is(err, ErrNoProcess) && !errors.Is(err, ErrNotRunning) {
		err = fmt.Errorf("%w: %w", ErrNotRunning, err)
	}
	return fmt.Errorf("instancelock: terminate %s: %w", l.path, l.cause(err))
}
