//go:build unix

package instancelock

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fileState is what must not change about someone's file.
type fileState struct {
	size  int64
	mode  fs.FileMode
	mtime time.Time
	ino   uint64
	head  [sha256.Size]byte // of the first 1 MiB
}

func stateOf(t *testing.T, path string) fileState {
	t.Helper()
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	h := sha256.New()
	_, err = io.Copy(h, io.LimitReader(f, 1<<20))
	require.NoError(t, err)
	var s fileState
	copy(s.head[:], h.Sum(nil))
	s.size, s.mode, s.mtime, s.ino = fi.Size(), fi.Mode(), fi.ModTime(), fi.Sys().(*syscall.Stat_t).Ino
	return s
}

// A file that is not a PID file, and that nothing locks, is refused by
// every entry point and left byte for byte as it is, whatever its size.
func TestForeignFilesAreRefusedAndKept(t *testing.T) {
	sqlite := "SQLite format 3\x00\x10\x00\x02\x02\x00@  \x00\x00\x00\x01" + strings.Repeat("\x00", 80)
	cases := map[string]struct {
		content string
		size    int64 // > len(content): a sparse tail
	}{
		"notes":                {content: "notes\n"},
		"SQLite database":      {content: sqlite},
		"1 GB SQLite database": {content: sqlite, size: 1 << 30},
		"over MaxFileSize":     {content: strings.Repeat("log line\n", MaxFileSize/9+1)},
		"trailing garbage":     {content: `{"pid":123,"startedAt":"2026-01-01T00:00:00Z"}]]]`},
		"JSON of another tool": {content: `{"name":"backend","version":"1.0.0"}` + "\n"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "d", "notes.txt")
			writeFile(t, path, c.content)
			if c.size > 0 {
				require.NoError(t, os.Truncate(path, c.size))
			}
			before := stateOf(t, path)

			l, err := New(path)
			require.NoError(t, err)
			err = l.TryLock()
			require.ErrorIs(t, err, ErrForeignFile)
			var pe *fs.PathError
			require.ErrorAs(t, err, &pe)
			assert.Equal(t, path, pe.Path)
			assert.Contains(t, err.Error(), "choose another PID file path")
			assert.NotErrorIs(t, err, ErrAlreadyRunning)

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			assert.ErrorIs(t, l.Lock(ctx), ErrForeignFile, "Lock does not wait on a foreign file")
			assert.NoError(t, ctx.Err())
			_, _, err = l.Running()
			assert.ErrorIs(t, err, ErrForeignFile)
			cleaned, err := l.CleanStale()
			assert.ErrorIs(t, err, ErrForeignFile)
			assert.False(t, cleaned)
			_, err = l.Holder()
			assert.ErrorIs(t, err, ErrForeignFile)
			assert.ErrorIs(t, err, ErrInvalidLock)
			require.NoError(t, l.Unlock(), "Unlock of a Locker that holds nothing")

			assert.Equal(t, before, stateOf(t, path), "the file is unchanged")
			entries, err := os.ReadDir(filepath.Dir(path))
			require.NoError(t, err)
			assert.Len(t, entries, 1, "nothing was created next to it")
		})
	}
}

// What a crash or a power loss leaves of a PID file is taken over at once.
func TestCrashRemnantsAreTakenOver(t *testing.T) {
	for _, content := range remnantSamples {
		path := filepath.Join(t.TempDir(), "x.pid")
		writeFile(t, path, content)
		l, err := New(path)
		require.NoError(t, err)
		_, running, err := l.Running()
		require.NoError(t, err, "%q", content)
		assert.False(t, running)
		_, err = l.Holder()
		assert.ErrorIs(t, err, ErrInvalidLock)
		assert.NotErrorIs(t, err, ErrForeignFile)
		require.NoError(t, l.TryLock(), "%q", content)
		info, _ := l.Info()
		got, err := l.Holder()
		require.NoError(t, err)
		assert.True(t, got.Equal(info))
		require.NoError(t, l.Unlock())
		assert.NoFileExists(t, path)
	}
}

// The path is resolved once, in New: a later Chdir neither loses the lock
// nor makes Unlock remove another file.
func TestLockFollowsTheFileAcrossChdir(t *testing.T) {
	home, elsewhere := t.TempDir(), t.TempDir()
	t.Chdir(home)
	l, err := acquireWith("./data/app.pid", watchEvery(minWatchInterval))
	require.NoError(t, err)
	abs := filepath.Join(home, "data", "app.pid")
	assert.Equal(t, abs, l.Path())
	t.Chdir(elsewhere)
	writeFile(t, filepath.Join(elsewhere, "data", "app.pid"), "") // a decoy at the relative path
	// Let the watcher run many times.
	for range 50 {
		time.Sleep(time.Millisecond)
		require.NoError(t, l.Err())
	}
	select {
	case <-l.Lost():
		t.Fatal("the lock was reported lost after a Chdir")
	default:
	}
	other, err := New("data/app.pid")
	require.NoError(t, err)
	_, err = other.Holder()
	assert.ErrorIs(t, err, ErrInvalidLock, "the decoy is another file")
	require.NoError(t, l.Unlock())
	assert.NoFileExists(t, abs, "Unlock removed the right file")
	assert.FileExists(t, filepath.Join(elsewhere, "data", "app.pid"), "and not the decoy")
}

// The machine is known by its PID space, not by its hostname.
func TestPIDSpaceDecidesNotTheHostname(t *testing.T) {
	sleeper := helperCmd(t, "pidfile-sleep")
	require.NoError(t, sleeper.Start())
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	live := sleeper.Process.Pid
	token, _, err := osProcesses{}.Start(live)
	require.NoError(t, err)
	space := thisPIDSpace()
	require.NotEmpty(t, space)
	assert.True(t, ProcessLock{PID: 1, PIDSpace: space, Hostname: "renamed"}.Local())
	assert.False(t, ProcessLock{PID: 1, PIDSpace: space + "0", Hostname: ""}.Local())
	parts := strings.SplitN(space, ":", 4)
	require.Len(t, parts, 4)
	if parts[3] != "" {
		earlier := parts[0] + ":another-boot:" + parts[2] + ":" + parts[3]
		assert.True(t, ProcessLock{PID: 1, PIDSpace: earlier}.Local(), "an earlier boot of this machine")
	}
	assert.False(t, ProcessLock{PID: 1, PIDSpace: parts[0] + ":another-boot:" + parts[2] + ":another-machine"}.Local())
	host, _ := os.Hostname()
	assert.True(t, ProcessLock{PID: 1, Hostname: host}.Local(), "files without pidSpace: the hostname rule")
	assert.False(t, ProcessLock{PID: 1, Hostname: host + "-other"}.Local())

	// Same PID space, another hostname (the host was renamed): the live
	// writer is probed (and, holding no lock, is not the holder).
	path := filepath.Join(t.TempDir(), "x.pid")
	writeFile(t, path, lockJSON(t, ProcessLock{PID: live, Hostname: "old-name", StartToken: token, PIDSpace: space}))
	var logs strings.Builder
	l, err := newWith(path, func(l *Locker) { l.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	require.NoError(t, err)
	require.NoError(t, l.TryLock())
	assert.Contains(t, logs.String(), fmt.Sprintf("process %d that wrote the file is alive, but it does not hold the lock", live))
	require.NoError(t, l.Unlock())
	// Another PID space, same hostname (a container sharing the volume):
	// its pid means nothing here, the free kernel lock decides.
	logs.Reset()
	writeFile(t, path, lockJSON(t, ProcessLock{PID: live, Hostname: host, StartToken: token, PIDSpace: space + "0"}))
	require.NoError(t, l.TryLock())
	assert.Contains(t, logs.String(), "another machine, boot or PID namespace")
	info, _ := l.Info()
	assert.Equal(t, space, info.PIDSpace)
	require.NoError(t, l.Unlock())
	assert.ErrorIs(t, l.Terminate(nil), ErrNotRunning)
}
