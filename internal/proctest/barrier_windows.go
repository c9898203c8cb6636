//go:build windows

package proctest

import (
	"os"
	"testing"
	"time"

	"golang.org/x/sys/windows"
)

// Barrier releases many helper processes at the same instant: the test
// holds an exclusive LockFileEx lock on a byte of a file, the helpers wait
// for a shared one (WaitBarrier), and the system wakes them all when the
// test lets go.
type Barrier struct {
	t testing.TB
	f *os.File
}

// NewBarrier creates the barrier's file at path (empty, or emptied) and
// opens it, failing t on error. The file is closed when the test ends. The
// barrier starts open: call Hold before the helpers wait.
func NewBarrier(t testing.TB, path string) *Barrier {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &Barrier{t: t, f: f}
}

// barrierLock locks (or unlocks) the first byte of f: exclusive or shared,
// waiting for it.
func barrierLock(f *os.File, exclusive bool) error {
	var flags uint32
	if exclusive {
		flags = windows.LOCKFILE_EXCLUSIVE_LOCK
	}
	return windows.LockFileEx(windows.Handle(f.Fd()), flags, 0, 1, 0, &windows.Overlapped{})
}

// Hold closes the barrier: helpers that call WaitBarrier block until
// Release. It fails the test (Fatal) on error.
func (b *Barrier) Hold() {
	b.t.Helper()
	if err := barrierLock(b.f, true); err != nil {
		b.t.Fatal(err)
	}
}

// Release opens the barrier after a pause of 5 ms, which lets helpers that
// have said they are about to wait settle into the wait, so that the system
// wakes them together. It fails the test (Fatal) on error.
func (b *Barrier) Release() {
	b.t.Helper()
	time.Sleep(5 * time.Millisecond)
	if err := windows.UnlockFileEx(windows.Handle(b.f.Fd()), 0, 1, 0, &windows.Overlapped{}); err != nil {
		b.t.Fatal(err)
	}
}

// WaitBarrier is the helper's side of a Barrier at path: it opens the file,
// calls ready (which typically prints "ready" for the test to read), then
// blocks until the barrier is released, and closes the file (which drops
// the shared lock it got). It returns the error of opening the file (before
// calling ready) or of the wait.
func WaitBarrier(path string, ready func()) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	ready()
	return barrierLock(f, false)
}
