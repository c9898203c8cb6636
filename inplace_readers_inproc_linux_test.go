//go:build linux

package instancelock

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// In place (a directory this user may not create files in), a PID file
// that readers hold with shared flocks is written at once while this
// Locker holds the lock's names, and its exclusive flock is taken as soon
// as the last reader leaves. The reader here is another open file of this
// process (a flock belongs to the open file, not to the process).
func TestInPlaceLockIsTakenWhenTheReadersLeave(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.pid")
	require.NoError(t, os.WriteFile(path, nil, 0o644))
	reader, err := os.Open(path)
	require.NoError(t, err)
	defer reader.Close()
	require.NoError(t, unix.Flock(int(reader.Fd()), unix.LOCK_SH))

	l, err := newWith(path, func(l *Locker) { l.WatchInterval = -1 })
	require.NoError(t, err)
	l.byRename = false // write in place, as in a directory we may not write
	require.NoError(t, l.TryLock(), "readers do not keep the start from happening")
	defer l.Unlock()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	_, err = ParseProcessLock(data)
	require.NoError(t, err, "the file is written at once: %q", data)

	fi, err := os.Stat(path)
	require.NoError(t, err)
	writers, _, err := flockOwners(fi)
	require.NoError(t, err)
	require.Empty(t, writers, "the exclusive flock waits for the reader")

	require.NoError(t, reader.Close()) // the reader leaves
	for deadline := time.Now().Add(10 * time.Second); ; {
		writers, _, err = flockOwners(fi)
		require.NoError(t, err)
		if slices.Contains(writers, os.Getpid()) {
			break
		}
		require.True(t, time.Now().Before(deadline), "the exclusive flock was not taken after the reader left")
		time.Sleep(2 * time.Millisecond)
	}
	require.NoError(t, l.Err())
}
