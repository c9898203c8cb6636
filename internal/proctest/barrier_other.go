//go:build !unix && !windows

package proctest

import (
	"errors"
	"testing"
)

// Barrier needs a file lock that waits, which these systems lack: a test
// that makes one is skipped.
type Barrier struct{}

// NewBarrier skips the test.
func NewBarrier(t testing.TB, path string) *Barrier {
	t.Skip("no waiting file lock for a barrier on this system")
	return nil
}

// Hold does nothing.
func (b *Barrier) Hold() {}

// Release does nothing.
func (b *Barrier) Release() {}

// WaitBarrier fails: there is no barrier here.
func WaitBarrier(path string, ready func()) error {
	return errors.New("no waiting file lock for a barrier on this system")
}
