//go:build linux

package instancelock

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"time"

	"golang.org/x/sys/unix"
)

// waiter wakes Lock when the PID file changes (inotify on its directory,
// filtered by name), when the holder exits (pidfd), or when ctx is done (an
// eventfd written by context.AfterFunc). It uses no goroutine of its own.
type waiter struct {
	ino, efd int
	base     []byte
	buf      []byte
}

const watchMask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO |
	unix.IN_CLOSE_WRITE | unix.IN_ATTRIB | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF

func newWaiter(dir, base string) (*waiter, error) {
	ino, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	if _, err := unix.InotifyAddWatch(ino, dir, watchMask); err != nil {
		unix.Close(ino)
		return nil, err
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(ino)
		return nil, err
	}
	return &waiter{ino: ino, efd: efd, base: []byte(base), buf: make([]byte, 64<<10)}, nil
}

// close releases the descriptors. Closing an inotify descriptor that has a
// watch waits for the kernel's SRCU grace period (8-25 ms measured), so it
// is done in the background: Lock returns the moment it holds the lock.
func (w *waiter) close() {
	unix.Close(w.efd)
	go unix.Close(w.ino)
}

// wait returns when an event names the PID file, the process pid (if > 0)
// exits, ctx is done, or max has passed.
func (w *waiter) wait(ctx context.Context, pid int, max time.Duration) {
	fds := []unix.PollFd{{Fd: int32(w.ino), Events: unix.POLLIN}, {Fd: int32(w.efd), Events: unix.POLLIN}}
	if pid > 0 {
		if pfd, err := unix.PidfdOpen(pid, 0); err == nil {
			defer unix.Close(pfd)
			fds = append(fds, unix.PollFd{Fd: int32(pfd), Events: unix.POLLIN})
		} else if errors.Is(err, unix.ESRCH) {
			return // already gone
		}
	}
	stop := context.AfterFunc(ctx, func() {
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		unix.Write(w.efd, one[:])
	})
	defer stop()
	deadline := time.Now().Add(max)
	for {
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			return
		}
		n, err := unix.Poll(fds, int(left/time.Millisecond)+1)
		if err == unix.EINTR || n == 0 {
			continue
		}
		if err != nil {
			return
		}
		if fds[1].Revents != 0 || (len(fds) > 2 && fds[2].Revents != 0) {
			return
		}
		if fds[0].Revents != 0 && w.drain() {
			return
		}
	}
}

// drain reads the pending inotify events and reports whether one names the
// PID file or the directory itself.
func (w *waiter) drain() bool {
	hit := false
	for {
		n, err := unix.Read(w.ino, w.buf)
		if n <= 0 || err != nil {
			return hit
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			mask := binary.NativeEndian.Uint32(w.buf[off+4:])
			nameLen := int(binary.NativeEndian.Uint32(w.buf[off+12:]))
			name := w.buf[off+unix.SizeofInotifyEvent : min(n, off+unix.SizeofInotifyEvent+nameLen)]
			name = bytes.TrimRight(name, "\x00")
			if bytes.Equal(name, w.base) || mask&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_Q_OVERFLOW|unix.IN_IGNORED) != 0 {
				hit = true
			}
			off += unix.SizeofInotifyEvent + nameLen
		}
	}
}
