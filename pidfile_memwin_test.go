//go:build !plan9

package instancelock_test

import (
	"errors"
	"os"
	"syscall"
	"testing"

	"github.com/ad5dec64/instancelock"
	"github.com/ad5dec64/instancelock/instancelocktest"
	"github.com/ad5dec64/instancelock/internal/inuse"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests drive the Windows way of publishing (lock the file at the
// path, write it in place) through a MemFS with Windows' rules, on every
// system: a file that is open cannot be removed or renamed.

func newWinRig(t *testing.T) *memRig {
	r := newMemRig(t)
	r.fs = instancelocktest.NewWindowsMemFS()
	return r
}

func TestMemWindowsLockerHoldsItsFile(t *testing.T) {
	r := newWinRig(t)
	l := r.locker()
	require.False(t, instancelock.PublishesByRename(l), "a Locker on a MemFS with Windows' rules writes in place")
	require.NoError(t, l.TryLock())
	r.heldBy(l)
	r.untouched([]string{"app.pid"}, memPIDPath)

	// The held file can be neither removed nor replaced.
	err := r.fs.Remove(memPIDPath)
	assert.ErrorIs(t, err, inuse.Err)
	require.NoError(t, r.fs.WriteFile(memPIDDir+"/other", []byte("x"), 0o644))
	assert.Error(t, r.fs.Rename(memPIDDir+"/other", memPIDPath))
	require.NoError(t, r.fs.Remove(memPIDDir+"/other"))
	require.NoError(t, instancelock.CheckHeld(l), "the file is still the Locker's")

	second := r.locker()
	err = second.TryLock()
	var are *instancelock.AlreadyRunningError
	require.ErrorAs(t, err, &are)
	assert.Equal(t, os.Getpid(), are.Holder.PID)
	r.heldBy(l)

	require.NoError(t, l.Unlock())
	r.untouched(nil)
}

func TestMemWindowsTakeoverAfterCrash(t *testing.T) {
	r := newWinRig(t)
	first := r.locker()
	require.NoError(t, first.TryLock())
	require.Equal(t, 1, r.fs.CloseHandles(memPIDPath)) // the holder dies
	r.untouched([]string{"app.pid"})
	next := r.locker()
	require.NoError(t, next.TryLock())
	r.heldBy(next)
	require.NoError(t, next.Unlock())
	r.untouched(nil)
}

// CleanStale on Windows closes the stale file before removing it; a reader
// that has it open at that moment makes the removal fail, and CleanStale
// judges the file again.
func TestMemWindowsCleanStale(t *testing.T) {
	r := newWinRig(t)
	r.write(r.json(instancelock.ProcessLock{PID: 4242}))
	reader, err := r.fs.OpenFile(memPIDPath, os.O_RDONLY, 0)
	require.NoError(t, err)
	removes := 0
	r.fs.Before("remove", memPIDPath, func() {
		if removes++; removes == 2 {
			reader.Close()
		}
	})
	l := r.locker()
	cleaned, err := l.CleanStale()
	require.NoError(t, err)
	assert.True(t, cleaned)
	assert.Equal(t, 2, removes, "the first removal met the reader's handle")
	r.untouched(nil)
}

// Unlock closes first, then removes: a contender that opened the file in
// between keeps it.
func TestMemWindowsUnlockLeavesTheFileToAContender(t *testing.T) {
	r := newWinRig(t)
	l := r.locker()
	require.NoError(t, l.TryLock())
	var contender instancelock.File
	r.fs.Before("remove", memPIDPath, func() {
		var err error
		contender, err = r.fs.OpenFile(memPIDPath, os.O_RDWR, 0)
		require.NoError(t, err)
	})
	require.NoError(t, l.Unlock())
	r.fs.Clear()
	require.NotNil(t, contender)
	r.untouched([]string{"app.pid"}, memPIDPath)
	require.NoError(t, contender.TryLock(), "the contender takes the released file")
	require.NoError(t, contender.Close())
}

// A failed write of a new PID file leaves nothing behind.
func TestMemWindowsFailedWriteLeavesNothing(t *testing.T) {
	r := newWinRig(t)
	require.NoError(t, r.fs.MkdirAll(memPIDDir, 0o755))
	r.fs.Fail("write", memPIDPath, syscall.ENOSPC)
	err := r.locker().TryLock()
	require.ErrorIs(t, err, syscall.ENOSPC)
	assert.False(t, errors.Is(err, instancelock.ErrAlreadyRunning))
	r.untouched(nil)
}
