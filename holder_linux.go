//go:build linux

package instancelock

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// On Linux the lock has two kernel objects, both released by the kernel
// when the holder dies, however it dies:
//
//   - the flock of the PID file (below and in flock_unix.go), which also
//     works between containers that share a volume;
//   - listening Unix sockets in the abstract namespace, named after the
//     PID file's path as given and after its real path (symbolic links
//     resolved), each taken at acquisition. No rm or mv can touch them, so
//     while the holder lives no other process of the same network
//     namespace can take the lock, whatever happened to the file, its
//     directory or a symbolic link on the way (the path as given keeps its
//     name; an alias reaches the real path's name). A contender
//     that finds the name bound connects to it, and SO_PEERCRED names the
//     holder's pid and uid: kernel proof of who holds.
//
// The name is taken first and given back last; see docs/design.md.

// hasLockName: this platform has the abstract-socket name.
const hasLockName = true

// lockName returns the abstract socket name for the PID file at path as
// given: a hash of the absolute, lexically cleaned path, computed once in
// New. The same path string always meets the same name, wherever its
// symbolic links lead now (a swapped "current -> release" link included).
func lockName(path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = filepath.Clean(path)
	}
	return nameOf(abs)
}

// realName returns the abstract socket name of the file the path reaches
// now: a hash of its real path (the symbolic links of its directory
// resolved; of a directory that does not exist yet, those of its deepest
// existing ancestor, so that the name is the one later starts compute once
// the directory exists), and that real directory. When the path has no
// symbolic link it is l.name. Two spellings of one file (aliases through
// symbolic links) meet at this name. It is computed at each acquisition
// and each check.
//
// Resolving costs one lstat per component of the path, so the result is
// kept with the identity (device and inode) of the directory it resolved
// to, and reused while a stat of the directory as given (one system call
// that follows its symbolic links) still reaches that same directory: a
// swapped symbolic link on the way reaches another one and is resolved
// again. The identity is checked on both sides of the resolution, so a
// swap during it is never cached. What a cached entry cannot see is the
// real directory itself renamed (same inode, new real path); the name it
// gives is then the one of its old real path, while the path as given
// keeps its own name and the PID file's kernel lock stays with the file.
func (l *Locker) realName() (name, dir string) {
	var before unix.Stat_t
	statErr := unix.Stat(l.dir(), &before)
	if c := l.real.Load(); statErr == nil && c != nil && c.dev == uint64(before.Dev) && c.ino == uint64(before.Ino) {
		return c.name, c.dir
	}
	dir = resolveDir(l.dir())
	name = l.name
	if dir != l.dir() {
		name = nameOf(filepath.Join(dir, filepath.Base(l.path)))
	}
	var after unix.Stat_t
	if statErr == nil && unix.Stat(dir, &after) == nil && after.Dev == before.Dev && after.Ino == before.Ino {
		l.real.Store(&realDir{dev: uint64(after.Dev), ino: uint64(after.Ino), name: name, dir: dir})
	}
	return name, dir
}

// resolveDir resolves the symbolic links of dir, or of its deepest
// existing ancestor, the rest joined as given.
func resolveDir(dir string) string {
	rest := ""
	for d := dir; ; {
		if r, err := filepath.EvalSymlinks(d); err == nil {
			return filepath.Join(r, rest)
		}
		up := filepath.Dir(d)
		if up == d {
			return dir
		}
		rest = filepath.Join(filepath.Base(d), rest)
		d = up
	}
}

func nameOf(path string) string {
	sum := sha256.Sum256([]byte(path))
	return "@instancelock/" + hex.EncodeToString(sum[:16])
}

// errNameTaken: another socket has the lock's name.
var errNameTaken = errors.New("the lock's name is taken")

// bindName binds and listens on the abstract socket name. The descriptor
// is close-on-exec, so children never keep the name. It returns
// errNameTaken when the name is bound by another socket.
func bindName(name string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: name}); err != nil {
		unix.Close(fd)
		if err == unix.EADDRINUSE {
			return -1, errNameTaken
		}
		return -1, os.NewSyscallError("bind", err)
	}
	// The largest backlog the kernel allows (it caps it at somaxconn):
	// until the holder's watcher drains them (10 ms after acquisition, then
	// at once), every contender's and reader's connection waits there.
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("listen", err)
	}
	return fd, nil
}

func closeName(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}

// peer is the process that listens on the lock's name.
type peer struct {
	pid int // as seen from this process's PID namespace; 0 when not visible
	uid int
}

// errNoListener: nothing listens on the name (nothing bound it, or a
// socket bound it without listening, which a holder never does).
var errNoListener = errors.New("nothing listens on the lock's name")

// peerOfName identifies the process that listens on the name: it
// connects and reads the listener's credentials (SO_PEERCRED); the
// connection is closed at once and the holder drains it (see
// holdwatch_linux.go). When the listener's backlog is full (a crowd of
// contenders and readers, a holder that is stopped, or connections made
// on purpose to hide the holder: any user may connect to an abstract
// name), it waits for room up to nameBacklogWait, and then finds the
// listening socket's owner in /proc instead (see listenerOf).
func peerOfName(name string) (peer, error) {
	p, err := connectPeer(name, false)
	if err == unix.EAGAIN {
		p, err = connectPeer(name, true)
	}
	if err == unix.EAGAIN {
		return listenerOf(name)
	}
	if err != nil && !errors.Is(err, errNoListener) {
		return peer{}, os.NewSyscallError("connect", err)
	}
	return p, err
}

// nameBacklogWait is how long peerOfName waits for room in a full backlog.
const nameBacklogWait = 250 * time.Millisecond

// connectPeer connects to the name, without waiting or, when wait is set,
// waiting up to nameBacklogWait for room in the listener's backlog, and
// reads the listener's credentials. It returns unix.EAGAIN when the
// backlog stayed full.
func connectPeer(name string, wait bool) (peer, error) {
	flags := unix.SOCK_STREAM | unix.SOCK_CLOEXEC
	if !wait {
		flags |= unix.SOCK_NONBLOCK
	}
	fd, err := unix.Socket(unix.AF_UNIX, flags, 0)
	if err != nil {
		return peer{}, err
	}
	defer unix.Close(fd)
	if wait {
		tv := unix.NsecToTimeval(nameBacklogWait.Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
			return peer{}, err
		}
	}
	for {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: name})
		if err != unix.EINTR {
			break
		}
	}
	switch {
	case err == unix.ECONNREFUSED, err == unix.ENOENT:
		return peer{}, errNoListener
	case err == unix.EINPROGRESS: // the wait timed out
		return peer{}, unix.EAGAIN
	case err != nil:
		return peer{}, err
	}
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return peer{}, err
	}
	return peer{pid: int(cred.Pid), uid: int(cred.Uid)}, nil
}

// listenerOf finds, without connecting, the process that listens on the
// abstract name: the socket's inode in /proc/net/unix, then the process
// that has it open among /proc/<pid>/fd (the owner of that directory is
// the process's user). It is slow (it reads every process's descriptors),
// and only runs when the name's backlog is full.
func listenerOf(name string) (peer, error) {
	ino, err := listeningInode(name)
	if err != nil {
		return peer{}, err
	}
	target := "socket:[" + strconv.FormatUint(ino, 10) + "]"
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return peer{}, err
	}
	for _, e := range procs {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		dir := "/proc/" + e.Name() + "/fd/"
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if link, err := os.Readlink(dir + fd.Name()); err == nil && link == target {
				uid, err := procUID(pid)
				if err != nil {
					return peer{}, err
				}
				return peer{pid: pid, uid: uid}, nil
			}
		}
	}
	return peer{}, fmt.Errorf("the socket listening on %s (inode %d) is held by no process visible here", name, ino)
}

// listeningInode returns the inode of the socket that listens on the
// abstract name, from /proc/net/unix (abstract names appear with "@").
func listeningInode(name string) (uint64, error) {
	data, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return 0, err
	}
	// Num RefCount Protocol Flags Type St Inode Path
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 8 && f[7] == name && f[3] == "00010000" { // __SO_ACCEPTCON: listening
			return strconv.ParseUint(f[6], 10, 64)
		}
	}
	return 0, errNoListener
}

// trustedPeer reports whether the process p may be this lock's holder:
// one of this process's own user, of root, or of the owner of the PID file
// or of its directory. A socket of any other user cannot be our holder (it
// could not have written the PID file), so it is ignored: another user
// cannot block the service by binding the name first. (Not even by running
// this very program and stopping it while it holds the name: the program's
// path is not trusted, the owner of the files is.)
//
// The holder must also see the file system as this process does (the same
// mount namespace and the same root directory, see sameView), so that the
// path names the same file for both: containers that share a network
// namespace (the containers of a Kubernetes pod, host networking) but not
// a file system meet at the same name with different files, and neither
// may refuse, report or signal the other. A process that this process
// cannot see (another PID namespace: pid 0) is not trusted either: the
// lock then rests on the PID file's kernel lock, as between network
// namespaces. A process whose namespaces this one may not read (another
// user's, unless this is root) is trusted by its user alone.
func (l *Locker) trustedPeer(p peer) bool {
	return l.trustedUser(p.uid) && sameView(p.pid)
}

// trustedUser: this process's own user, root, or the owner of the PID
// file or of its directory.
func (l *Locker) trustedUser(uid int) bool {
	if uid == os.Geteuid() || uid == 0 {
		return true
	}
	for _, p := range []string{l.path, l.dir()} {
		if fi, err := os.Lstat(p); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == uid {
				return true
			}
		}
	}
	return false
}

// sameView reports whether process pid may see the file system as this
// process does: false only when its mount namespace or root directory is
// proven different (both readable, and not the same), or when pid is not
// visible from here (0). Anything that cannot be read (another user's
// process, which a process other than root may not inspect; a process that
// is exiting) keeps the name counting: ignoring a name on a doubt would let
// a second instance start after an rm of the file.
func sameView(pid int) bool {
	if pid <= 0 {
		return false
	}
	for _, f := range []string{"ns/mnt", "root"} {
		if same, known := sameAsMine(pid, f); known && !same {
			return false
		}
	}
	return true
}

// sameAsMine compares what /proc/<pid>/<f> and /proc/self/<f> lead to (a
// namespace, the root directory): same only means something when known,
// that is when both could be read.
func sameAsMine(pid int, f string) (same, known bool) {
	var mine, theirs unix.Stat_t
	if unix.Stat("/proc/self/"+f, &mine) != nil || unix.Stat("/proc/"+strconv.Itoa(pid)+"/"+f, &theirs) != nil {
		return false, false
	}
	return mine.Dev == theirs.Dev && mine.Ino == theirs.Ino, true
}

// procUID returns the user of process pid: the owner of /proc/<pid>.
func procUID(pid int) (int, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/"+strconv.Itoa(pid), &st); err != nil {
		return 0, err
	}
	return int(st.Uid), nil
}

// flockOwners lists, from /proc/locks, the pids of the flock(2) locks on
// the file fi describes: writers hold LOCK_EX, readers LOCK_SH. Pids are
// as the kernel recorded them at flock time (a child that inherited the
// descriptor shows its parent's pid) and as seen from /proc's PID
// namespace (0 when not visible).
func flockOwners(fi fs.FileInfo) (writers, readers []int, err error) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, nil, errors.ErrUnsupported
	}
	data, err := os.ReadFile("/proc/locks")
	if err != nil {
		return nil, nil, err
	}
	// "1: FLOCK  ADVISORY  WRITE 1234 fe:01:5678 0 EOF"; waiters have "->"
	// after the number. Device numbers are hex, at least two digits.
	key := []byte(fmt.Sprintf(" %02x:%02x:%d ", unix.Major(uint64(st.Dev)), unix.Minor(uint64(st.Dev)), st.Ino))
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		k := bytes.Index(line, key)
		if k < 0 {
			continue
		}
		f := bytes.Fields(line[:k])
		// f: "N:", "FLOCK", "ADVISORY", "WRITE", "pid"
		if len(f) != 5 || string(f[1]) != "FLOCK" {
			continue
		}
		pid, _ := strconv.Atoi(string(f[4]))
		switch string(f[3]) {
		case "WRITE":
			writers = append(writers, pid)
		case "READ":
			readers = append(readers, pid)
		}
	}
	return writers, readers, nil
}

// nameSquatter says who has one of the lock's names when a process that
// cannot be this lock's holder (see trustedPeer) listens on it, or one
// that cannot be identified: a start then holds no name (see claimName).
// For readers, which take no name.
func (l *Locker) nameSquatter() (string, bool) {
	names := []string{l.name}
	if rname, _ := l.realName(); rname != l.name {
		names = append(names, rname)
	}
	for _, name := range names {
		p, err := peerOfName(name)
		switch {
		case errors.Is(err, errNoListener):
		case err != nil:
			return "the lock's name is bound by a process that cannot be identified from here", true
		case !l.trustedPeer(p):
			return squatter(p), true
		}
	}
	return "", false
}

// signalPinned sends sig to pid through a pidfd opened before check runs:
// check proves (again) that pid is the holder, and the pidfd guarantees
// that the signal reaches that very process even if it exits and its pid
// is reused in between.
func signalPinned(pid int, sig os.Signal, check func() error) error {
	s, ok := sig.(syscall.Signal)
	if !ok {
		return fmt.Errorf("signal %v is not a syscall.Signal", sig)
	}
	pfd, err := unix.PidfdOpen(pid, 0)
	if err == unix.ESRCH {
		return fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	if err != nil {
		// No pidfd (old kernel): check, then kill.
		if err := check(); err != nil {
			return err
		}
		return processSignal(pid, sig)
	}
	defer unix.Close(pfd)
	if err := check(); err != nil {
		return err
	}
	if err := unix.PidfdSendSignal(pfd, s, nil, 0); err != nil {
		if err == unix.ESRCH {
			return fmt.Errorf("signal %v to pid %d: %w", sig, pid, ErrNoProcess)
		}
		return fmt.Errorf("signal %v to pid %d: %w", sig, pid, err)
	}
	return nil
}

// holdsFlock reports whether the kernel shows that process pid holds the
// PID file's lock: one of its descriptors is open on the file at the path
// or at its real path, or under one of their temporary names (also once
// removed: "(deleted)"), and /proc/locks
// names pid as the holder of that file's exclusive flock. It needs to read
// /proc/<pid>/fd: another user's process (unless we are root) is not
// proven.
func (l *Locker) holdsFlock(pid int) bool {
	if pid <= 0 {
		return false
	}
	real := filepath.Join(resolveDir(l.dir()), filepath.Base(l.path))
	// A file published by link(2) keeps, in /proc/<pid>/fd, the temporary
	// name it was created under once that name is unlinked; one created
	// unnamed (O_TMPFILE, see createHeld) keeps "#<inode>" in its
	// directory.
	named := func(p string) bool {
		return p == l.path || p == real || strings.HasPrefix(p, l.tmpPrefix) || strings.HasPrefix(p, tempPrefix(real)) ||
			unnamedIn(p, l.dir()) || unnamedIn(p, filepath.Dir(real))
	}
	fds := "/proc/" + strconv.Itoa(pid) + "/fd/"
	ents, err := os.ReadDir(fds)
	if err != nil {
		return false
	}
	for _, e := range ents {
		target, err := os.Readlink(fds + e.Name())
		if err != nil {
			continue
		}
		target = strings.TrimSuffix(target, " (deleted)")
		if !named(target) {
			continue
		}
		fi, err := os.Stat(fds + e.Name())
		if err != nil {
			continue
		}
		if writers, _, err := flockOwners(fi); err == nil && slices.Contains(writers, pid) {
			return true
		}
	}
	return false
}

// unnamedIn reports whether p is how /proc/<pid>/fd shows a file created
// unnamed (O_TMPFILE) in dir: dir/#<inode>.
func unnamedIn(p, dir string) bool {
	rest, ok := strings.CutPrefix(p, dir+"/#")
	if !ok || rest == "" {
		return false
	}
	_, err := strconv.ParseUint(rest, 10, 64)
	return err == nil
}

// netPeerOf reports whether process pid is in this process's network
// namespace (so that, while the lock's names are free or ours, it holds
// none of them and cannot be an instance started here), and its uid. It
// is false when either namespace cannot be read (another user's process,
// for a non-root reader) or pid is not visible.
func netPeerOf(pid int) (uid int, same bool) {
	if pid <= 0 {
		return 0, false
	}
	same, known := sameAsMine(pid, "ns/net")
	uid, err := procUID(pid)
	if !known || err != nil {
		return 0, false
	}
	return uid, same
}

// namesFree reports whether nothing listens on any of the lock's names
// (for readers: what a start that would take them all sees).
func (l *Locker) namesFree() bool {
	if l.name == "" {
		return false
	}
	for _, name := range l.lockNames() {
		if _, err := peerOfName(name); !errors.Is(err, errNoListener) {
			return false
		}
	}
	return true
}
