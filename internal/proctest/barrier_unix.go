//go:build unix

package proctest

import (
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Barrier releases many helper processes at the same instant: the test
// holds an exclusive flock on a file, the helpers wait for a shared one
// (WaitBarrier), and the kernel wakes them all when the test lets go.
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

// Hold closes the barrier: helpers that call WaitBarrier block until
// Release. It fails the test (Fatal) on error.
func (b *Barrier) Hold() {
	b.t.Helper()
	if err := unix.Flock(int(b.f.Fd()), unix.LOCK_EX); err != nil {
		b.t.Fatal(err)
	}
}

// Release opens the barrier after a pause of 5 ms, which lets helpers that
// have said they are about to wait settle into the wait, so that the kernel
// wakes them together. It fails the test (Fatal) on error.
func (b *Barrier) Release() {
	b.t.Helper()
	time.Sleep(5 * time.Millisecond)
	if err := unix.Flock(int(b.f.Fd()), unix.LOCK_UN); err != nil {
		b.t.Fatal(err)
	}
}

// WaitBarrier is the helper's side of a Barrier at path: it opens the file,
// calls ready (which typically prints "ready" for the test to read), then
// blocks until the barrier is released, and closes the file. It returns the
// error of opening the file (before calling ready) or of the wait.
func WaitBarrier(path string, ready func()) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	ready()
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_SH)
		if err != unix.EINTR {
			return err
		}
	}
}
