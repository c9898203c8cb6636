//go:build linux

package instancelock

import (
	"bytes"
	"encoding/binary"
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
	dirs  map[int32]map[*tenure]func() // inotify watch → holdings in that directory
	socks map[int32]bool               // listening sockets
	subs  int                          // holdings watched
	idle  time.Time                    // when subs dropped to 0
}

var (
	holdWatchMu sync.Mutex
	holdWatch   *holdWatcher
)

// heldWatchMask: the events on a directory that may mean the PID file in
// it was removed, moved or replaced, or that the directory itself was.
const heldWatchMask = unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_CREATE |
	unix.IN_ATTRIB | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

const dirSelfEvents = unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_IGNORED | unix.IN_UNMOUNT

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

// watchHeld starts watching t: the directory dir (for events naming base
// or the directory itself, which call poke) and the listening socket sock
// (-1 for none). It returns the inotify watch (-1 when the directory could
// not be watched: the periodic check still runs).
func watchHeld(t *tenure, dir, base string, sock int, poke func()) (wd int32, err error) {
	holdWatchMu.Lock()
	defer holdWatchMu.Unlock()
	w, err := getHoldWatcher()
	if err != nil {
		return -1, err
	}
	t.watched = true
	w.mu.Lock()
	defer w.mu.Unlock()
	wd = -1
	if dir != "" {
		n, aerr := unix.InotifyAddWatch(w.ino, dir, heldWatchMask)
		if aerr == nil {
			wd = int32(n)
			subs := w.dirs[wd]
			if subs == nil {
				subs = map[*tenure]func(){}
				w.dirs[wd] = subs
			}
			t.base = []byte(base)
			subs[t] = poke
		} else {
			err = aerr
		}
	}
	if sock >= 0 {
		if unix.EpollCtl(w.ep, unix.EPOLL_CTL_ADD, sock, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(sock)}) == nil {
			w.socks[int32(sock)] = true
		}
	}
	w.subs++
	return wd, err
}

// rewatchHeld moves t's directory watch to the directory now at dir
// (after the directory was replaced and the file re-published).
func rewatchHeld(t *tenure, old int32, dir string, poke func()) int32 {
	holdWatchMu.Lock()
	w := holdWatch
	holdWatchMu.Unlock()
	if w == nil {
		return -1
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if subs := w.dirs[old]; subs != nil {
		delete(subs, t)
	}
	n, err := unix.InotifyAddWatch(w.ino, dir, heldWatchMask)
	if err != nil {
		return -1
	}
	wd := int32(n)
	subs := w.dirs[wd]
	if subs == nil {
		subs = map[*tenure]func(){}
		w.dirs[wd] = subs
	}
	subs[t] = poke
	return wd
}

// unwatchHeld stops watching t. It must be called before sock is closed.
// The directory watch stays (it is cheap, and the next holding in the same
// directory reuses it) until the watcher ends or too many pile up.
func unwatchHeld(t *tenure, wd int32, sock int) {
	holdWatchMu.Lock()
	w := holdWatch
	holdWatchMu.Unlock()
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if subs := w.dirs[wd]; subs != nil {
		delete(subs, t)
		if len(subs) == 0 && len(w.dirs) > 8 {
			unix.InotifyRmWatch(w.ino, uint32(wd))
			delete(w.dirs, wd)
		}
	}
	if sock >= 0 && w.socks[int32(sock)] {
		delete(w.socks, int32(sock))
		unix.EpollCtl(w.ep, unix.EPOLL_CTL_DEL, sock, nil)
	}
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
			name := bytes.TrimRight(buf[off+unix.SizeofInotifyEvent:min(n, off+unix.SizeofInotifyEvent+nameLen)], "\x00")
			off += unix.SizeofInotifyEvent + nameLen
			if mask&unix.IN_Q_OVERFLOW != 0 {
				for _, subs := range w.dirs {
					for _, p := range subs {
						pokes = append(pokes, p)
					}
				}
				continue
			}
			subs := w.dirs[wd]
			for t, p := range subs {
				if mask&dirSelfEvents != 0 || bytes.Equal(name, t.base) {
					pokes = append(pokes, p)
				}
			}
			if mask&unix.IN_IGNORED != 0 {
				delete(w.dirs, wd)
			}
		}
	}
}
