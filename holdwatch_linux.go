//go:build linux

package instancelock

import (
	"encoding/binary"
	"errors"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// holdWatcher is the process's one watcher of held locks: one goroutine
// waiting in epoll on one inotify descriptor (a watch on the directory of
// every held PID file) and on the listening sockets of the held lock names
// (it drains the connections contenders and readers make to learn the
// holder's pid). It starts with the first holding and ends after a second
// without any, so an idle process runs nothing.
type holdWatcher struct {
	mu    sync.Mutex
	ep    int
	ino   int
	dirs  map[int32]map[*tenure]func() // inotify watch (directory or file) → holdings it concerns
	socks map[int32]bool               // listening sockets
	subs  int                          // holdings watched
	idle  time.Time                    // when subs dropped to 0
}

var (
	holdWatchMu sync.Mutex
	holdWatch   *holdWatcher
)

// Two watches per holding, chosen so that the holder's own work in the
// directory (temporary files, links) wakes nobody:
//   - on the held file itself: IN_ATTRIB (its link count changed: it was
//     removed, or another file was renamed over it; or its mode changed),
//     IN_MOVE_SELF (renamed), IN_DELETE_SELF;
//   - on its directory, only the directory's own fate: IN_MOVE_SELF (the
//     directory was renamed, e.g. replaced by a new one), IN_DELETE_SELF.
//
// A rename of a directory further up the path is seen by the periodic
// check only.
const (
	fileWatchMask = unix.IN_ATTRIB | unix.IN_MOVE_SELF | unix.IN_DELETE_SELF
	dirWatchMask  = unix.IN_MOVE_SELF | unix.IN_DELETE_SELF | unix.IN_ONLYDIR
)

// getHoldWatcher returns the running watcher, starting one if needed. The
// caller holds holdWatchMu.
func getHoldWatcher() (*holdWatcher, error) {
	if holdWatch != nil {
		return holdWatch, nil
	}
	ino, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		unix.Close(ino)
		return nil, err
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, ino, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(ino)}); err != nil {
		unix.Close(ino)
		unix.Close(ep)
		return nil, err
	}
	w := &holdWatcher{ep: ep, ino: ino, dirs: map[int32]map[*tenure]func(){}, socks: map[int32]bool{}, idle: time.Now()}
	holdWatch = w
	go w.run()
	return w, nil
}

// watchHeld starts watching t: its file (through path) and the directory
// dir, whose events call poke, and the listening sockets of its names.
// With path "" only the sockets are watched. Watches that cannot be added
// are left out (the periodic check still runs) and reported.
func watchHeld(t *tenure, dir, path string, poke func()) error {
	holdWatchMu.Lock()
	defer holdWatchMu.Unlock()
	w, err := getHoldWatcher()
	if err != nil {
		return err
	}
	t.watched = true
	w.mu.Lock()
	defer w.mu.Unlock()
	w.subs++
	w.addSock(t.sock)
	w.addSock(t.rsock)
	if path == "" {
		return nil
	}
	return w.addWatches(t, dir, path, poke)
}

// addSock adds a listening socket (-1: none). The caller holds w.mu.
func (w *holdWatcher) addSock(sock int) {
	if sock >= 0 {
		if unix.EpollCtl(w.ep, unix.EPOLL_CTL_ADD, sock, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(sock)}) == nil {
			w.socks[int32(sock)] = true
		}
	}
}

// rewatchSock replaces the listening socket old by sock in t's watch (a
// holding that took its real path's new name). It must be called before
// old is closed.
func rewatchSock(t *tenure, old, sock int) {
	w := watcherOf(t)
	if w == nil {
		return
	}
	defer w.mu.Unlock()
	delete(w.socks, int32(old))
	w.addSock(sock)
}

// addWatches adds t's file and directory watches. The caller holds w.mu.
func (w *holdWatcher) addWatches(t *tenure, dir, path string, poke func()) error {
	var errs []error
	for i, spec := range [2]struct {
		name string
		mask uint32
	}{{path, fileWatchMask}, {dir, dirWatchMask}} {
		n, err := unix.InotifyAddWatch(w.ino, spec.name, spec.mask)
		if err != nil {
			errs = append(errs, os.NewSyscallError("inotify_add_watch "+spec.name, err))
			t.wds[i] = -1
			continue
		}
		wd := int32(n)
		t.wds[i] = wd
		subs := w.dirs[wd]
		if subs == nil {
			subs = map[*tenure]func(){}
			w.dirs[wd] = subs
		}
		subs[t] = poke
	}
	return errors.Join(errs...)
}

// watcherOf returns the process's watcher, locked, when it watches t;
// nil otherwise.
func watcherOf(t *tenure) *holdWatcher {
	holdWatchMu.Lock()
	w := holdWatch
	holdWatchMu.Unlock()
	if w == nil || !t.watched {
		return nil
	}
	w.mu.Lock()
	return w
}

// rewatchHeld moves t's watches to the file and directory now at the path
// (after the file was re-published, perhaps in a new directory).
func rewatchHeld(t *tenure, dir, path string, poke func()) {
	w := watcherOf(t)
	if w == nil {
		return
	}
	defer w.mu.Unlock()
	w.forget(t)
	w.addWatches(t, dir, path, poke)
}

// forget removes t from its watches: the file's watch is removed, the
// directory's stays (it wakes nobody while no holding needs it, and the
// next holding in that directory reuses it) until the watcher ends or too
// many pile up. The caller holds w.mu.
func (w *holdWatcher) forget(t *tenure) {
	for i, wd := range t.wds {
		subs := w.dirs[wd]
		if subs == nil {
			continue
		}
		delete(subs, t)
		if len(subs) == 0 && (i == 0 || len(w.dirs) > 8) {
			if i == 1 {
				unix.InotifyRmWatch(w.ino, uint32(wd))
			}
			// A file's watch ends by itself when the file is removed and
			// closed (IN_IGNORED); until then its events find nobody.
			delete(w.dirs, wd)
		}
	}
	t.wds = [2]int32{-1, -1}
}

// unwatchHeld stops watching t. It must be called before its sockets are
// closed.
func unwatchHeld(t *tenure) {
	w := watcherOf(t)
	if w == nil {
		return
	}
	defer w.mu.Unlock()
	w.forget(t)
	// Closing the socket takes it out of the epoll set.
	delete(w.socks, int32(t.sock))
	delete(w.socks, int32(t.rsock))
	w.subs--
	if w.subs == 0 {
		w.idle = time.Now()
	}
}

// idleFor is how long the watcher waits without holdings before it ends.
const idleFor = time.Second

func (w *holdWatcher) run() {
	events := make([]unix.EpollEvent, 16)
	buf := make([]byte, 16<<10)
	var pokes []func()
	for {
		n, err := unix.EpollWait(w.ep, events, 250)
		if err != nil && err != unix.EINTR {
			n = 0
		}
		pokes = pokes[:0]
		w.mu.Lock()
		for _, ev := range events[:max(n, 0)] {
			if ev.Fd == int32(w.ino) {
				pokes = w.readEvents(buf, pokes)
			} else if w.socks[ev.Fd] {
				drain(int(ev.Fd))
			}
		}
		w.mu.Unlock()
		for _, p := range pokes {
			p()
		}
		if n <= 0 && w.maybeStop() {
			return
		}
	}
}

// maybeStop ends the watcher when it has been idle for idleFor.
func (w *holdWatcher) maybeStop() bool {
	holdWatchMu.Lock()
	defer holdWatchMu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.subs > 0 || time.Since(w.idle) < idleFor {
		return false
	}
	holdWatch = nil
	unix.Close(w.ep)
	unix.Close(w.ino) // waits for an SRCU grace period: this goroutine's time, nobody else's
	return true
}

// drain accepts and closes the pending connections of a listening socket.
func drain(fd int) {
	for {
		c, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		if err != nil {
			return
		}
		unix.Close(c)
	}
}

// readEvents reads the pending inotify events and appends the pokes of the
// holdings they concern. The caller holds w.mu.
func (w *holdWatcher) readEvents(buf []byte, pokes []func()) []func() {
	for {
		n, err := unix.Read(w.ino, buf)
		if n <= 0 || err != nil {
			return pokes
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			wd := int32(binary.NativeEndian.Uint32(buf[off:]))
			mask := binary.NativeEndian.Uint32(buf[off+4:])
			nameLen := int(binary.NativeEndian.Uint32(buf[off+12:]))
			off += unix.SizeofInotifyEvent + nameLen
			if mask&unix.IN_Q_OVERFLOW != 0 {
				for _, subs := range w.dirs {
					for _, p := range subs {
						pokes = append(pokes, p)
					}
				}
				continue
			}
			for _, p := range w.dirs[wd] {
				pokes = append(pokes, p)
			}
			if mask&unix.IN_IGNORED != 0 {
				delete(w.dirs, wd)
			}
		}
	}
}
