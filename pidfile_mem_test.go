//go:build !plan9

package instancelock_test

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock"
	"github.com/ad5dec64/instancelock/instancelocktest"

	"github.com/ad5dec64/instancelock/internal/proctest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests drive the Locker through MemFS and MemProcesses, to reach
// the branches a real disk and process table rarely show: injected I/O
// errors, files changing between two calls, PID reuse on demand.

func init() {
	// The internal tests cannot import instancelocktest (it imports this
	// package): they get their MemFS from here.
	instancelock.SetUnixMemFS(func() instancelock.FS { return instancelocktest.NewUnixMemFS() })
}

// memPIDPath is not a directory on disk, so Lock polls instead of watching
// it with inotify.
const memPIDPath = "/srv/instancelock-memtest/run/app.pid"

var memPIDDir = filepath.Dir(memPIDPath)

// memRig is a MemFS and a MemProcesses in which this process is alive with
// the start token "self-token", and pid 4242 is free. The MemFS follows
// Unix's rules on every system, so that these tests drive the Unix way of
// publishing (a temporary file renamed into place) on Windows too;
// pidfile_memwin_test.go drives the Windows way.
type memRig struct {
	t     *testing.T
	fs    *instancelocktest.MemFS
	procs *instancelocktest.MemProcesses
	host  string
	log   *proctest.SyncBuffer
}

func newMemRig(t *testing.T) *memRig {
	host, err := os.Hostname()
	require.NoError(t, err)
	r := &memRig{t: t, fs: instancelocktest.NewUnixMemFS(), procs: instancelocktest.NewMemProcesses(), host: host, log: &proctest.SyncBuffer{}}
	r.procs.Add(os.Getpid(), "self-token", time.Now().Add(-time.Hour))
	return r
}

// locker returns a Locker on memPIDPath in the rig, without watcher unless
// set asks for one (set changes the fields after the rig's).
func (r *memRig) locker(set ...func(*instancelock.Locker)) *instancelock.Locker {
	r.t.Helper()
	l, err := instancelock.New(memPIDPath)
	require.NoError(r.t, err)
	l.FS, l.Processes, l.WatchInterval = r.fs, r.procs, -1
	l.Logger = slog.New(slog.NewTextHandler(r.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	for _, f := range set {
		f(l)
	}
	return l
}

// write puts content at memPIDPath, unlocked, as a tool that takes no lock
// (or a dead process) left it.
func (r *memRig) write(content string) {
	r.t.Helper()
	require.NoError(r.t, r.fs.MkdirAll(memPIDDir, 0o755))
	require.NoError(r.t, r.fs.WriteFile(memPIDPath, []byte(content), 0o644))
}

// hold writes content and keeps the file's lock through an open file, as
// a live holder process does. Closing the file is the holder's death.
func (r *memRig) hold(content string) instancelock.File {
	r.t.Helper()
	r.write(content)
	f, err := r.fs.OpenFile(memPIDPath, os.O_RDONLY, 0)
	require.NoError(r.t, err)
	require.NoError(r.t, f.TryLock())
	r.t.Cleanup(func() { f.Close() })
	return f
}

func (r *memRig) content() string {
	r.t.Helper()
	data, err := r.fs.ReadFile(memPIDPath)
	require.NoError(r.t, err)
	return string(data)
}

// json encodes pl as a PID file, with the start time now and this host
// unless given.
func (r *memRig) json(pl instancelock.ProcessLock) string {
	r.t.Helper()
	if pl.StartedAt.IsZero() {
		pl.StartedAt = time.Now().UTC().Truncate(time.Millisecond)
	}
	if pl.Hostname == "" {
		pl.Hostname = r.host
	}
	data, err := pl.MarshalJSON()
	require.NoError(r.t, err)
	return string(data) + "\n"
}

// untouched checks that the directory holds exactly names and that no file
// is left open but those in open.
func (r *memRig) untouched(names []string, open ...string) {
	r.t.Helper()
	got, err := r.fs.ListDir(memPIDDir)
	require.NoError(r.t, err)
	assert.ElementsMatch(r.t, names, got, "files in %s", memPIDDir)
	assert.ElementsMatch(r.t, open, r.fs.OpenFiles(), "files left open")
}

// heldBy returns the ProcessLock in the PID file and checks that it is
// the one l published.
func (r *memRig) heldBy(l *instancelock.Locker) {
	r.t.Helper()
	info, ok := l.Info()
	require.True(r.t, ok, "the Locker does not hold the lock")
	got, err := instancelock.ParseProcessLock([]byte(r.content()))
	require.NoError(r.t, err)
	assert.True(r.t, got.Equal(info), "the PID file holds %v, not %v", got, info)
}

func TestMemLockerAcquireAndRelease(t *testing.T) {
	r := newMemRig(t)
	l := r.locker(func(l *instancelock.Locker) { l.Port = 8080 })
	require.NoError(t, l.TryLock())
	r.heldBy(l)
	info, _ := l.Info()
	assert.Equal(t, "self-token", info.StartToken)
	assert.Equal(t, 8080, info.Port)
	dir, err := r.fs.Lstat(memPIDDir)
	require.NoError(t, err)
	assert.Equal(t, fs.ModeDir|0o755, dir.Mode())
	fi, err := r.fs.Lstat(memPIDPath)
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o644), fi.Mode())
	open := r.fs.OpenFiles()
	require.Len(t, open, 1)
	assert.True(t, strings.HasPrefix(open[0], memPIDPath+".tmp-"), open[0])
	r.untouched([]string{"app.pid"}, open...)
	assert.ErrorIs(t, l.TryLock(), instancelock.ErrAlreadyHeld)

	// A second Locker sees this process as the holder.
	l2 := r.locker()
	err = l2.TryLock()
	var are *instancelock.AlreadyRunningError
	require.ErrorAs(t, err, &are)
	assert.Equal(t, "the holder keeps the kernel lock", are.Reason)
	assert.True(t, are.Holder.Equal(info))
	holder, running, err := l2.Running()
	require.NoError(t, err)
	assert.True(t, running)
	assert.True(t, holder.Equal(info))
	assert.ErrorContains(t, l2.Terminate(nil), "held by this process")
	cleaned, err := l2.CleanStale()
	require.NoError(t, err)
	assert.False(t, cleaned)
	cleaned, err = l.CleanStale()
	require.NoError(t, err)
	assert.False(t, cleaned)
	r.heldBy(l)
	assert.Empty(t, r.procs.Signals())

	require.NoError(t, l.Unlock())
	r.untouched(nil)
	require.NoError(t, l.Unlock(), "a second Unlock")
	assert.ErrorIs(t, l.Err(), instancelock.ErrNotHeld)
	assert.ErrorIs(t, r.locker().Err(), instancelock.ErrNotHeld, "a Locker that never held")
	bad := r.locker(func(l *instancelock.Locker) { l.Port = 65536 })
	assert.ErrorContains(t, bad.TryLock(), "Locker.Port is 65536, outside 0..65535")
	r.untouched(nil)
	require.NoError(t, l2.TryLock())
	r.heldBy(l2)
	require.NoError(t, l2.Unlock())
}

// A holder that dies leaves its file; the next instance takes it over.
func TestMemLockerHolderDies(t *testing.T) {
	r := newMemRig(t)
	dead := r.locker()
	require.NoError(t, dead.TryLock())
	assert.Equal(t, 1, r.fs.CloseHandles(memPIDPath))
	r.untouched([]string{"app.pid"})

	l := r.locker()
	require.NoError(t, l.TryLock())
	r.heldBy(l)
	assert.Contains(t, r.log.String(), "names this process's own pid")
	r.untouched([]string{"app.pid"}, r.fs.OpenFiles()...)
	require.Len(t, r.fs.OpenFiles(), 1)
	require.NoError(t, l.Unlock())
	r.untouched(nil)
}

// A failed attempt leaves no temporary file, no open file, and the
// existing PID file as it was; once the fault is gone, TryLock works.
func TestMemLockerFailuresLeaveNothingBehind(t *testing.T) {
	const stale = `{"pid":12,"startedAt":"2025` // cut off by a crash
	cases := []struct {
		name     string
		existing bool // a stale PID file is there
		fault    func(r *memRig)
		is       error
		says     string
	}{
		{"EIO creating the temp file", true,
			func(r *memRig) { r.fs.Fail("open", memPIDPath+".tmp-*", syscall.EIO) },
			syscall.EIO, "open app.pid.tmp-"},
		{"read-only directory, no PID file", false,
			func(r *memRig) { require.NoError(r.t, r.fs.Chmod(memPIDDir, 0o555)) },
			fs.ErrPermission, "create the PID file for it"},
		{"ENOSPC writing the temp file", true,
			func(r *memRig) { r.fs.Fail("write", "", syscall.ENOSPC) },
			syscall.ENOSPC, "write app.pid.tmp-"},
		{"no locks on this file system", false,
			func(r *memRig) { r.fs.Fail("lock", "", syscall.ENOLCK) },
			syscall.ENOLCK, "flock app.pid.tmp-"},
		{"link EPERM", false,
			func(r *memRig) { r.fs.Fail("link", "", syscall.EPERM) },
			fs.ErrPermission, "link app.pid.tmp-"},
		{"rename fails", true,
			func(r *memRig) { r.fs.Fail("rename", "", syscall.EIO) },
			syscall.EIO, "rename app.pid.tmp-"},
		{"EACCES opening the existing file", true,
			func(r *memRig) { r.fs.Fail("open", memPIDPath, syscall.EACCES) },
			fs.ErrPermission, "open " + memPIDPath},
		{"fstat of the existing file fails", true,
			func(r *memRig) { r.fs.Fail("stat", memPIDPath, syscall.EIO) },
			syscall.EIO, memPIDPath},
		{"lock of the existing file fails", true,
			func(r *memRig) { r.fs.Fail("lock", memPIDPath, syscall.ENOLCK) },
			syscall.ENOLCK, memPIDPath},
		{"lstat after locking fails", true,
			func(r *memRig) { r.fs.FailNth("lstat", memPIDPath, 2, syscall.EIO) }, // the first is the look before opening
			syscall.EIO, memPIDPath},
		{"lstat of the path fails", true,
			func(r *memRig) { r.fs.Fail("lstat", memPIDPath, syscall.EACCES) },
			fs.ErrPermission, memPIDPath},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newMemRig(t)
			var names []string
			if c.existing {
				r.write(stale)
				names = []string{"app.pid"}
			} else {
				require.NoError(t, r.fs.MkdirAll(memPIDDir, 0o755))
			}
			c.fault(r)
			l := r.locker()
			err := l.TryLock()
			require.ErrorIs(t, err, c.is)
			assert.ErrorContains(t, err, c.says)
			r.untouched(names)
			if c.existing {
				assert.Equal(t, stale, r.content())
			}
			_, held := l.Info()
			assert.False(t, held)

			r.fs.Clear()
			require.NoError(t, r.fs.Chmod(memPIDDir, 0o755))
			require.NoError(t, l.TryLock())
			r.heldBy(l)
			require.NoError(t, l.Unlock())
			r.untouched(nil)
		})
	}
	t.Run("the directory cannot be created", func(t *testing.T) {
		r := newMemRig(t)
		r.fs.Fail("mkdir", "", syscall.EACCES)
		err := r.locker().TryLock()
		require.ErrorIs(t, err, fs.ErrPermission)
		assert.ErrorContains(t, err, "mkdir "+memPIDDir+": permission denied")
		_, err = r.fs.Lstat(memPIDDir)
		assert.ErrorIs(t, err, fs.ErrNotExist)
	})
}

// A temporary name that cannot be removed after the link is only worth a
// warning: the lock is held.
func TestMemLockerTempNameNotRemoved(t *testing.T) {
	r := newMemRig(t)
	r.fs.Fail("remove", memPIDPath+".tmp-*", syscall.EIO)
	l := r.locker()
	require.NoError(t, l.TryLock())
	r.heldBy(l)
	assert.Contains(t, r.log.String(), "could not remove the temporary name")
	r.fs.Clear()
	require.NoError(t, l.Unlock())
	assert.Empty(t, r.mustList(), "Unlock removes the leftover temporary name too")
}

// Unlock removes the path only when it is sure the file there is its own:
// when its own file cannot be stat'ed, a file that a second instance put
// at the path after ours vanished is left alone.
func TestMemUnlockWhenItCannotTell(t *testing.T) {
	r := newMemRig(t)
	a := r.locker()
	require.NoError(t, a.TryLock())
	require.NoError(t, r.fs.Remove(memPIDPath)) // a temp cleaner
	b := r.locker()
	require.NoError(t, b.TryLock())
	r.fs.Fail("stat", memPIDPath+".tmp-*", syscall.EIO) // a's file, still known by its first name
	require.NoError(t, a.Unlock())
	r.fs.Clear()
	assert.Contains(t, r.log.String(), "leaving the path alone")
	r.heldBy(b)
	require.NoError(t, b.Unlock())
}

// CleanStale closes what it opened, also when the first open fails.
func TestMemCleanStaleOpenFailsOnce(t *testing.T) {
	r := newMemRig(t)
	r.write(`{"pid":7,"st`)
	r.fs.FailNth("open", memPIDPath, 1, syscall.EIO)
	_, err := r.locker().CleanStale()
	assert.ErrorIs(t, err, syscall.EIO)
	assert.Empty(t, r.fs.OpenFiles())
}

// The in-place mode (Windows) through the public API: the file is locked,
// then written in place; a failed write leaves a stale file stale.
func TestMemInPlaceThroughTryLock(t *testing.T) {
	r := newMemRig(t)
	r.write(r.json(instancelock.ProcessLock{PID: 4242}) + strings.Repeat(" ", 300)) // longer than ours
	a := r.locker()
	instancelock.WriteInPlace(a)
	require.NoError(t, a.TryLock())
	info, _ := a.Info()
	got, err := instancelock.ParseProcessLock([]byte(r.content()))
	require.NoError(t, err, "the old, longer content was cut")
	assert.True(t, got.Equal(info))
	b := r.locker()
	instancelock.WriteInPlace(b)
	assert.ErrorIs(t, b.TryLock(), instancelock.ErrAlreadyRunning)
	require.NoError(t, a.Unlock())
	_, err = r.fs.Lstat(memPIDPath)
	assert.ErrorIs(t, err, fs.ErrNotExist, "released: closed, then removed")

	r.write(r.json(instancelock.ProcessLock{PID: 4242}))
	r.fs.Fail("write", memPIDPath, syscall.ENOSPC)
	err = b.TryLock()
	assert.ErrorIs(t, err, syscall.ENOSPC)
	r.fs.Clear()
	assert.Empty(t, r.content(), "a failed write leaves an emptied file, judged stale")
	assert.True(t, instancelock.IsRemnant([]byte(r.content())))
	assert.Empty(t, r.fs.OpenFiles())
	require.NoError(t, b.TryLock())
	require.NoError(t, b.Unlock())
}

// An EIO on the existing file: a held file is reported with an unknown
// holder; an unlocked one cannot be a live holder's and is taken over.
func TestMemLockerEIOReadingTheExistingFile(t *testing.T) {
	t.Run("held", func(t *testing.T) {
		r := newMemRig(t)
		h := r.hold(r.json(instancelock.ProcessLock{PID: 4242}))
		r.procs.Add(4242, "", time.Now())
		r.fs.Fail("read", memPIDPath, syscall.EIO)
		l := r.locker()
		err := l.TryLock()
		var are *instancelock.AlreadyRunningError
		require.ErrorAs(t, err, &are)
		assert.Zero(t, are.Holder.PID)
		assert.Contains(t, err.Error(), "could not be read")
		assert.Contains(t, are.Help("app"), "PID:      unknown")
		r.untouched([]string{"app.pid"}, memPIDPath)

		_, err = l.Holder()
		var pe *fs.PathError
		require.ErrorAs(t, err, &pe)
		assert.Equal(t, "read", pe.Op)
		assert.ErrorIs(t, err, syscall.EIO)
		// Running sees the lock held; Terminate has no pid to signal: a
		// holder runs, unknown.
		holder, running, err := l.Running()
		require.NoError(t, err)
		assert.True(t, running)
		assert.Zero(t, holder.PID)
		assert.ErrorIs(t, l.Terminate(nil), instancelock.ErrAlreadyRunning)
		assert.Empty(t, r.procs.Signals())
		require.NoError(t, h.Close())
	})
	for _, op := range []string{"read"} {
		t.Run("unlocked, "+op+" fails", func(t *testing.T) {
			r := newMemRig(t)
			r.write(r.json(instancelock.ProcessLock{PID: 4242}))
			r.procs.Add(4242, "", time.Now())
			r.fs.Fail(op, memPIDPath, syscall.EIO)
			before := r.content()
			l := r.locker()
			err := l.TryLock()
			require.ErrorIs(t, err, syscall.EIO, "a file that cannot be read is not judged")
			assert.ErrorContains(t, err, memPIDPath)
			r.fs.Clear()
			assert.Equal(t, before, r.content())
			r.untouched([]string{"app.pid"})
		})
	}
}

// Files that change between two steps of TryLock: the attempt is retried.
func TestMemLockerFileChangesUnderfoot(t *testing.T) {
	once := func(fn func()) func() {
		var o sync.Once
		return func() { o.Do(fn) }
	}
	replace := func(r *memRig) func() {
		return func() {
			require.NoError(r.t, r.fs.WriteFile(memPIDPath+".new", []byte(`{"pid":9`), 0o644))
			require.NoError(r.t, r.fs.Rename(memPIDPath+".new", memPIDPath))
		}
	}
	remove := func(r *memRig) func() { return func() { require.NoError(r.t, r.fs.Remove(memPIDPath)) } }
	cases := []struct {
		name  string
		setup func(r *memRig)
	}{
		{"removed before it is opened", func(r *memRig) { r.fs.Before("open", memPIDPath, once(remove(r))) }},
		{"removed before it is locked", func(r *memRig) { r.fs.Before("lock", memPIDPath, once(remove(r))) }},
		{"replaced before it is locked", func(r *memRig) { r.fs.Before("lock", memPIDPath, once(replace(r))) }},
		{"replaced before the temp file is linked", func(r *memRig) { r.fs.Before("link", "", once(replace(r))) }},
		{"open fails as if it vanished", func(r *memRig) { r.fs.FailNth("open", memPIDPath, 1, syscall.ENOENT) }},
		{"temp name taken", func(r *memRig) { r.fs.FailNth("open", memPIDPath+".tmp-*", 1, syscall.EEXIST) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newMemRig(t)
			r.write(`{"pid":7,"st`)
			c.setup(r)
			l := r.locker()
			require.NoError(t, l.TryLock())
			r.fs.Clear()
			r.heldBy(l)
			r.untouched([]string{"app.pid"}, r.fs.OpenFiles()...)
			require.Len(t, r.fs.OpenFiles(), 1)
			require.NoError(t, l.Unlock())
			r.untouched(nil)
		})
	}
	t.Run("replaced every time", func(t *testing.T) {
		r := newMemRig(t)
		r.write(`{"pid":7,"st`)
		r.fs.Before("lock", memPIDPath, replace(r))
		err := r.locker().TryLock()
		var pe *fs.PathError
		require.ErrorAs(t, err, &pe)
		assert.Equal(t, "lock", pe.Op)
		assert.ErrorIs(t, err, instancelock.ErrContended)
		r.untouched([]string{"app.pid"})
		assert.Equal(t, `{"pid":9`, r.content())
	})
	t.Run("a symlink appears", func(t *testing.T) {
		r := newMemRig(t)
		require.NoError(t, r.fs.MkdirAll(memPIDDir, 0o755))
		r.fs.Before("link", "", once(func() { require.NoError(t, r.fs.Symlink("/etc/passwd", memPIDPath)) }))
		err := r.locker().TryLock()
		assert.ErrorIs(t, err, instancelock.ErrSymlink)
		assert.ErrorContains(t, err, memPIDPath)
		r.untouched([]string{"app.pid"})
	})
}

// Anything but a regular file at the path is refused by every method,
// with an error naming the path, and nothing is created.
func TestMemLockerRefusesBadPaths(t *testing.T) {
	cases := map[string]struct {
		make func(r *memRig) error
		why  error
	}{
		"symlink":          {func(r *memRig) error { return r.fs.Symlink("target", memPIDPath) }, instancelock.ErrSymlink},
		"symlink to a pid": {func(r *memRig) error { return r.fs.Symlink("/etc/passwd", memPIDPath) }, instancelock.ErrSymlink},
		"fifo":             {func(r *memRig) error { return r.fs.Mkfifo(memPIDPath) }, instancelock.ErrNotRegular},
		"directory":        {func(r *memRig) error { return r.fs.MkdirAll(memPIDPath, 0o755) }, instancelock.ErrNotRegular},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			r := newMemRig(t)
			require.NoError(t, r.fs.MkdirAll(memPIDDir, 0o755))
			require.NoError(t, c.make(r))
			l := r.locker()
			for what, err := range map[string]error{
				"TryLock":    l.TryLock(),
				"Lock":       l.Lock(context.Background()),
				"Holder":     memErr2(l.Holder()),
				"Running":    memErr3(l.Running()),
				"CleanStale": memErr2(l.CleanStale()),
				"Terminate":  l.Terminate(nil),
			} {
				var pe *fs.PathError
				if assert.ErrorAs(t, err, &pe, what) {
					assert.Equal(t, memPIDPath, pe.Path, what)
				}
				assert.ErrorIs(t, err, c.why, what)
			}
			r.untouched([]string{"app.pid"})
			_, err := r.fs.Lstat("/etc/passwd")
			assert.ErrorIs(t, err, fs.ErrNotExist, "a symlink's target was created")
			assert.Empty(t, r.procs.Signals())
		})
	}
}

// Unlocked files are judged by their content: whether the process that
// wrote them is still the one with that pid.
func TestMemLockerJudgesUnlockedFiles(t *testing.T) {
	mtime := time.Now().Add(-time.Hour).Truncate(time.Second)
	cases := []struct {
		name    string
		content func(r *memRig) string
		procs   func(p *instancelocktest.MemProcesses)
		stale   bool
		why     string
	}{
		{"pid reused: another start token",
			func(r *memRig) string { return r.json(instancelock.ProcessLock{PID: 4242, StartToken: "tok-a"}) },
			func(p *instancelocktest.MemProcesses) { p.Add(4242, "tok-b", time.Now()) },
			true, "now belongs to another process"},
		{"same start token: the writer is alive",
			func(r *memRig) string { return r.json(instancelock.ProcessLock{PID: 4242, StartToken: "tok-a"}) },
			func(p *instancelocktest.MemProcesses) { p.Add(4242, "tok-a", time.Now()) },
			true, "that wrote the file is alive"},
		{"dead pid",
			func(r *memRig) string { return r.json(instancelock.ProcessLock{PID: 4242, StartToken: "tok-a"}) },
			func(p *instancelocktest.MemProcesses) {},
			true, "process 4242 is not running"},
		{"start token unknown",
			func(r *memRig) string { return r.json(instancelock.ProcessLock{PID: 4242, StartToken: "tok-a"}) },
			func(p *instancelocktest.MemProcesses) {
				p.Add(4242, "tok-b", time.Now())
				p.Fail("start", 4242, errors.ErrUnsupported)
			},
			true, "process 4242 is alive"},
		{"probe fails",
			func(r *memRig) string { return r.json(instancelock.ProcessLock{PID: 4242}) },
			func(p *instancelocktest.MemProcesses) { p.Fail("alive", 4242, syscall.EINVAL) },
			true, "could not probe"},
		{"legacy pid started after the file was written",
			func(r *memRig) string { return "4242\n" },
			func(p *instancelocktest.MemProcesses) { p.Add(4242, "", mtime.Add(time.Minute)) },
			true, "after the file was written"},
		{"legacy pid started before the file was written",
			func(r *memRig) string { return "4242\n" },
			func(p *instancelocktest.MemProcesses) { p.Add(4242, "", mtime.Add(-time.Minute)) },
			false, "process 4242 is alive"},
		{"legacy pid started within the clock slack",
			func(r *memRig) string { return "4242\n" },
			func(p *instancelocktest.MemProcesses) { p.Add(4242, "", mtime.Add(time.Second)) },
			false, "process 4242 is alive"},
		{"JSON without token, pid started after",
			func(r *memRig) string { return r.json(instancelock.ProcessLock{PID: 4242, StartedAt: mtime}) },
			func(p *instancelocktest.MemProcesses) { p.Add(4242, "", mtime.Add(time.Hour)) },
			true, "after the file was written"},
		{"JSON without token, pid started before",
			func(r *memRig) string { return r.json(instancelock.ProcessLock{PID: 4242, StartedAt: mtime}) },
			func(p *instancelocktest.MemProcesses) { p.Add(4242, "", mtime.Add(-time.Hour)) },
			true, "process 4242 is alive"},
		{"our own pid",
			func(r *memRig) string {
				return r.json(instancelock.ProcessLock{PID: os.Getpid(), StartToken: "self-token"})
			},
			func(p *instancelocktest.MemProcesses) {},
			true, "this process's own pid"},
		{"our own pid, legacy",
			func(r *memRig) string { return strconv.Itoa(os.Getpid()) },
			func(p *instancelocktest.MemProcesses) {},
			true, "this process's own pid"},
		{"another host",
			func(r *memRig) string { return r.json(instancelock.ProcessLock{PID: 4242, Hostname: "web-2"}) },
			func(p *instancelocktest.MemProcesses) { p.Add(4242, "", time.Now().Add(-48*time.Hour)) },
			true, "written on host web-2"},
		{"cut off", func(r *memRig) string { return `{"pid":42,"startedAt":"20` + "\x00\x00" }, func(p *instancelocktest.MemProcesses) {},
			true, "what a crash left of a PID file"},
		{"NUL bytes", func(r *memRig) string { return strings.Repeat("\x00", 97) }, func(p *instancelocktest.MemProcesses) {},
			true, "what a crash left of a PID file"},
		{"empty", func(r *memRig) string { return "" }, func(p *instancelocktest.MemProcesses) {},
			true, "what a crash left of a PID file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			setup := func() *memRig {
				r := newMemRig(t)
				r.write(c.content(r))
				require.NoError(t, r.fs.SetModTime(memPIDPath, mtime))
				c.procs(r.procs)
				return r
			}
			// TryLock.
			r := setup()
			before := r.content()
			l := r.locker()
			err := l.TryLock()
			if c.stale {
				require.NoError(t, err)
				r.heldBy(l)
				assert.Contains(t, r.log.String(), c.why)
				require.NoError(t, l.Unlock())
			} else {
				var are *instancelock.AlreadyRunningError
				require.ErrorAs(t, err, &are)
				assert.Contains(t, are.Reason, c.why)
				assert.True(t, are.Unlocked, "the kernel lock is free")
				assert.NotContains(t, are.Help("app"), "The lock is held")
				assert.Equal(t, 4242, are.Holder.PID)
				assert.Equal(t, before, r.content())
				r.untouched([]string{"app.pid"})
			}
			// Running agrees, and says who.
			r = setup()
			holder, running, err := r.locker().Running()
			assert.False(t, running, "nothing holds the lock")
			if c.stale {
				require.NoError(t, err)
			} else {
				// A bare PID of a live process that takes no lock: starts
				// refuse, and Running says so (the same judgement).
				var are *instancelock.AlreadyRunningError
				require.ErrorAs(t, err, &are)
				assert.True(t, are.Unlocked)
				assert.Contains(t, are.Reason, c.why)
				// Terminate (the path without a kernel table of lock
				// owners) signals nothing and says why.
				terr := r.locker().Terminate(nil)
				assert.ErrorIs(t, terr, instancelock.ErrNotRunning)
				assert.ErrorContains(t, terr, "pid 4242 is alive but does not hold the lock")
				assert.Empty(t, r.procs.Signals())
			}
			if !strings.Contains(c.why, "what a crash left") {
				assert.NotZero(t, holder.PID)
			}
			// CleanStale removes exactly the stale ones, except an empty
			// file (what a release in place leaves).
			r = setup()
			cleaned, err := r.locker().CleanStale()
			require.NoError(t, err)
			removable := c.stale && c.name != "empty"
			assert.Equal(t, removable, cleaned)
			_, err = r.fs.Lstat(memPIDPath)
			assert.Equal(t, removable, errors.Is(err, fs.ErrNotExist))
			r.untouched(r.mustList())
		})
	}
}

func (r *memRig) mustList() []string {
	r.t.Helper()
	names, err := r.fs.ListDir(memPIDDir)
	require.NoError(r.t, err)
	return names
}

// Files whose kernel lock is held: the holder is alive, whatever its pid
// says, except that a holder seen dead on this host is a reader peeking at
// the file, and TryLock tries again.
func TestMemLockerHeldFiles(t *testing.T) {
	t.Run("live holder", func(t *testing.T) {
		r := newMemRig(t)
		content := r.json(instancelock.ProcessLock{PID: 4242, StartToken: "tok-a", Port: 3000})
		h := r.hold(content)
		r.procs.Add(4242, "tok-a", time.Now())
		l := r.locker()
		err := l.TryLock()
		var are *instancelock.AlreadyRunningError
		require.ErrorAs(t, err, &are)
		assert.Equal(t, 4242, are.Holder.PID)
		assert.Equal(t, 3000, are.Holder.Port)
		assert.Equal(t, memPIDPath, are.Path)
		assert.Contains(t, are.Help(""), "kill 4242")
		r.untouched([]string{"app.pid"}, memPIDPath)
		assert.Equal(t, content, r.content())
		// The holder dies (its lock is dropped, its pid freed): its file is
		// taken over.
		require.NoError(t, h.Close())
		r.procs.Remove(4242)
		require.NoError(t, l.TryLock())
		r.heldBy(l)
		require.NoError(t, l.Unlock())
	})
	t.Run("holder seen dead keeps the lock", func(t *testing.T) {
		r := newMemRig(t)
		content := r.json(instancelock.ProcessLock{PID: 4242})
		r.hold(content)
		attempts := 0
		r.fs.Before("open", memPIDPath, func() { attempts++ })
		l := r.locker()
		err := l.TryLock()
		var are *instancelock.AlreadyRunningError
		require.ErrorAs(t, err, &are)
		assert.Equal(t, 4242, are.Holder.PID)
		assert.Equal(t, instancelock.MaxAttempts, attempts, "TryLock tries again while a reader may hold the lock")
		r.untouched([]string{"app.pid"}, memPIDPath)
		assert.Equal(t, content, r.content())

		_, err = l.CleanStale()
		var pe *fs.PathError
		require.ErrorAs(t, err, &pe)
		assert.Equal(t, "clean", pe.Op)
		assert.ErrorIs(t, err, instancelock.ErrContended)
		r.untouched([]string{"app.pid"}, memPIDPath)
	})
	t.Run("holder on another host", func(t *testing.T) {
		r := newMemRig(t)
		r.hold(r.json(instancelock.ProcessLock{PID: 4242, Hostname: "web-2"}))
		attempts := 0
		r.fs.Before("open", memPIDPath, func() { attempts++ })
		l := r.locker()
		var are *instancelock.AlreadyRunningError
		require.ErrorAs(t, l.TryLock(), &are)
		assert.Equal(t, "web-2", are.Holder.Hostname)
		assert.Equal(t, 1, attempts, "a pid of another host is not probed here")
		assert.ErrorContains(t, l.Terminate(nil), "another host")
		cleaned, err := l.CleanStale()
		require.NoError(t, err)
		assert.False(t, cleaned)
		assert.Empty(t, r.procs.Signals())
	})
}

func TestMemTerminate(t *testing.T) {
	held := func(t *testing.T, token string) (*memRig, *instancelock.Locker) {
		r := newMemRig(t)
		r.hold(r.json(instancelock.ProcessLock{PID: 4242, StartToken: "tok-a"}))
		r.procs.Add(4242, token, time.Now())
		return r, r.locker()
	}
	t.Run("signals the holder", func(t *testing.T) {
		r, l := held(t, "tok-a")
		require.NoError(t, l.Terminate(nil))
		require.NoError(t, l.Terminate(os.Interrupt))
		assert.Equal(t, []instancelocktest.SentSignal{{PID: 4242, Signal: instancelock.DefaultSignal}, {PID: 4242, Signal: os.Interrupt}}, r.procs.Signals())
		assert.Contains(t, r.log.String(), "signalled the holder")
	})
	t.Run("no PID file", func(t *testing.T) {
		r := newMemRig(t)
		assert.ErrorIs(t, r.locker().Terminate(nil), instancelock.ErrNotRunning)
	})
	t.Run("stale PID file", func(t *testing.T) {
		r := newMemRig(t)
		r.write(r.json(instancelock.ProcessLock{PID: 4242}))
		assert.ErrorIs(t, r.locker().Terminate(nil), instancelock.ErrNotRunning)
		assert.Empty(t, r.procs.Signals())
	})
	t.Run("pid now belongs to another process", func(t *testing.T) {
		r, l := held(t, "tok-b")
		err := l.Terminate(nil)
		assert.ErrorIs(t, err, instancelock.ErrNotRunning)
		assert.ErrorContains(t, err, "no longer belongs")
		assert.Empty(t, r.procs.Signals())
	})
	t.Run("holder exits before the signal", func(t *testing.T) {
		r, l := held(t, "tok-a")
		r.procs.Remove(4242)
		err := l.Terminate(nil)
		assert.ErrorIs(t, err, instancelock.ErrNotRunning)
		assert.ErrorIs(t, err, instancelock.ErrNoProcess)
	})
	t.Run("signal refused", func(t *testing.T) {
		r, l := held(t, "tok-a")
		r.procs.Fail("signal", 4242, syscall.EPERM)
		err := l.Terminate(nil)
		assert.ErrorIs(t, err, syscall.EPERM)
		assert.NotErrorIs(t, err, instancelock.ErrNotRunning)
		assert.Empty(t, r.procs.Signals())
	})
	t.Run("the file cannot be read", func(t *testing.T) {
		r, l := held(t, "tok-a")
		r.fs.Fail("lstat", memPIDPath, syscall.EACCES)
		assert.ErrorIs(t, l.Terminate(nil), fs.ErrPermission)
		assert.Empty(t, r.procs.Signals())
	})
}

func TestMemRunningAndHolderErrors(t *testing.T) {
	content := func(r *memRig) string { return r.json(instancelock.ProcessLock{PID: 4242}) }
	t.Run("no file", func(t *testing.T) {
		r := newMemRig(t)
		l := r.locker()
		_, running, err := l.Running()
		require.NoError(t, err)
		assert.False(t, running)
		_, err = l.Holder()
		assert.ErrorIs(t, err, instancelock.ErrNotRunning)
		assert.ErrorIs(t, err, fs.ErrNotExist)
	})
	t.Run("file vanishes between lstat and open", func(t *testing.T) {
		r := newMemRig(t)
		r.write(content(r))
		r.fs.Fail("open", memPIDPath, syscall.ENOENT)
		l := r.locker()
		_, running, err := l.Running()
		require.NoError(t, err)
		assert.False(t, running)
		_, err = l.Holder()
		assert.ErrorIs(t, err, instancelock.ErrNotRunning)
	})
	t.Run("not a PID file", func(t *testing.T) {
		r := newMemRig(t)
		r.write("hello")
		_, err := r.locker().Holder()
		var pe *fs.PathError
		require.ErrorAs(t, err, &pe)
		assert.Equal(t, "parse", pe.Op)
		assert.ErrorIs(t, err, instancelock.ErrInvalidLock)
	})
	faults := []struct{ op, name string }{
		{"lstat", memPIDPath}, {"open", memPIDPath}, {"stat", memPIDPath}, {"lock", memPIDPath},
	}
	for _, f := range faults {
		t.Run(f.op+" fails", func(t *testing.T) {
			r := newMemRig(t)
			r.write(content(r))
			r.fs.Fail(f.op, f.name, syscall.EIO)
			_, _, err := r.locker().Running()
			assert.ErrorIs(t, err, syscall.EIO)
			assert.Empty(t, r.fs.OpenFiles())
		})
	}
	t.Run("open fails in Holder", func(t *testing.T) {
		r := newMemRig(t)
		r.write(content(r))
		r.fs.Fail("open", memPIDPath, syscall.EACCES)
		_, err := r.locker().Holder()
		assert.ErrorIs(t, err, fs.ErrPermission)
	})
}

func TestMemCleanStale(t *testing.T) {
	t.Run("stale file removed", func(t *testing.T) {
		r := newMemRig(t)
		r.write(r.json(instancelock.ProcessLock{PID: 4242}))
		cleaned, err := r.locker().CleanStale()
		require.NoError(t, err)
		assert.True(t, cleaned)
		r.untouched(nil)
	})
	t.Run("no file", func(t *testing.T) {
		r := newMemRig(t)
		cleaned, err := r.locker().CleanStale()
		require.NoError(t, err)
		assert.False(t, cleaned)
	})
	t.Run("live holder kept", func(t *testing.T) {
		r := newMemRig(t)
		r.hold(r.json(instancelock.ProcessLock{PID: 4242}))
		r.procs.Add(4242, "", time.Now())
		cleaned, err := r.locker().CleanStale()
		require.NoError(t, err)
		assert.False(t, cleaned)
		r.untouched([]string{"app.pid"}, memPIDPath)
	})
	t.Run("removal fails", func(t *testing.T) {
		r := newMemRig(t)
		r.write(`{"pid":7,"st`)
		r.fs.Fail("remove", memPIDPath, syscall.EACCES)
		cleaned, err := r.locker().CleanStale()
		assert.False(t, cleaned)
		assert.ErrorIs(t, err, fs.ErrPermission)
		assert.ErrorContains(t, err, "remove "+memPIDPath)
		r.untouched([]string{"app.pid"})
	})
	t.Run("open fails", func(t *testing.T) {
		r := newMemRig(t)
		r.write(`{"pid":7,"st`)
		r.fs.Fail("open", memPIDPath, syscall.EACCES)
		cleaned, err := r.locker().CleanStale()
		assert.False(t, cleaned)
		assert.ErrorIs(t, err, fs.ErrPermission)
		assert.ErrorContains(t, err, memPIDPath)
	})
	t.Run("open fails, then the file vanishes", func(t *testing.T) {
		r := newMemRig(t)
		r.write(`{"pid":7,"st`)
		r.fs.FailNth("open", memPIDPath, 1, syscall.EIO)
		r.fs.Before("lstat", memPIDPath, func() { r.fs.Remove(memPIDPath) })
		cleaned, err := r.locker().CleanStale()
		assert.False(t, cleaned)
		assert.ErrorIs(t, err, syscall.EIO)
		assert.ErrorContains(t, err, "open "+memPIDPath)
		r.untouched(nil)
	})
	t.Run("fstat fails", func(t *testing.T) {
		r := newMemRig(t)
		r.write(`{"pid":7,"st`)
		r.fs.Fail("stat", memPIDPath, syscall.EIO)
		_, err := r.locker().CleanStale()
		assert.ErrorIs(t, err, syscall.EIO)
		r.untouched([]string{"app.pid"})
	})
	t.Run("file replaced before it is locked", func(t *testing.T) {
		r := newMemRig(t)
		r.write(`{"pid":7,"st`)
		var o sync.Once
		r.fs.Before("lock", memPIDPath, func() {
			o.Do(func() {
				require.NoError(t, r.fs.WriteFile(memPIDPath+".new", []byte(`{"pid":8,"startedAt":"20`), 0o644))
				require.NoError(t, r.fs.Rename(memPIDPath+".new", memPIDPath))
			})
		})
		cleaned, err := r.locker().CleanStale()
		require.NoError(t, err)
		assert.True(t, cleaned)
		r.untouched(nil)
	})
}

func TestMemUnlock(t *testing.T) {
	t.Run("removal fails", func(t *testing.T) {
		r := newMemRig(t)
		l := r.locker()
		require.NoError(t, l.TryLock())
		r.fs.Fail("remove", memPIDPath, syscall.EACCES)
		err := l.Unlock()
		assert.ErrorIs(t, err, fs.ErrPermission)
		assert.ErrorContains(t, err, "remove "+memPIDPath+": permission denied")
		r.untouched([]string{"app.pid"}) // closed all the same: the lock is free
		r.fs.Clear()
		l2 := r.locker()
		require.NoError(t, l2.TryLock())
		require.NoError(t, l2.Unlock())
	})
	t.Run("close fails", func(t *testing.T) {
		r := newMemRig(t)
		l := r.locker()
		require.NoError(t, l.TryLock())
		r.fs.Fail("close", "", syscall.EIO)
		err := l.Unlock()
		assert.ErrorIs(t, err, syscall.EIO)
		assert.ErrorContains(t, err, "close "+memPIDPath+": input/output error")
		r.untouched(nil)
	})
	t.Run("file already gone", func(t *testing.T) {
		r := newMemRig(t)
		l := r.locker()
		require.NoError(t, l.TryLock())
		r.fs.Before("remove", memPIDPath, func() { r.fs.Clear(); require.NoError(t, r.fs.Remove(memPIDPath)) })
		require.NoError(t, l.Unlock(), "a file removed during Unlock is not an error")
		r.untouched(nil)
	})
}

// The watcher reports a removed file, and keeps the lock when it cannot
// tell (fstat or lstat failing).
func TestMemWatcher(t *testing.T) {
	instancelock.CheckNoGoroutineLeak(t)
	r := newMemRig(t)
	l := r.locker(func(l *instancelock.Locker) { l.WatchInterval, l.DisableRepublish = 10*time.Millisecond, true })
	require.NoError(t, l.TryLock())
	ticks := make(chan struct{}, 1)
	tick := func() {
		select {
		case ticks <- struct{}{}:
		default:
		}
	}
	waitTicks := func(n int) {
		t.Helper()
		for range n {
			select {
			case <-ticks:
			case <-time.After(10 * time.Second):
				t.Fatal("the watcher did not run")
			}
		}
	}
	r.fs.Before("stat", memPIDPath+".tmp-*", tick)
	r.fs.Fail("stat", memPIDPath+".tmp-*", syscall.EIO)
	waitTicks(3)
	assert.NoError(t, l.Err())
	r.fs.Clear()
	r.fs.Before("lstat", memPIDPath, tick)
	r.fs.Fail("lstat", memPIDPath, syscall.EIO)
	waitTicks(3)
	assert.NoError(t, l.Err())
	select {
	case <-l.Lost():
		t.Fatal("lost while the watcher could not tell")
	default:
	}
	r.fs.Clear()
	require.NoError(t, r.fs.Remove(memPIDPath))
	select {
	case <-l.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("the removal was not noticed")
	}
	assert.ErrorIs(t, l.Err(), instancelock.ErrLockLost)
	assert.ErrorContains(t, l.Err(), "removed")
	// A new instance starts; Unlock of the lost lock leaves its file.
	l2 := r.locker()
	require.NoError(t, l2.TryLock())
	require.NoError(t, l.Unlock())
	r.heldBy(l2)
	require.NoError(t, l2.Unlock())
}

// Lock waits while the holder lives and takes over when it dies; it gives
// up when the context ends; other errors end the wait at once.
func TestMemLock(t *testing.T) {
	instancelock.CheckNoGoroutineLeak(t)
	t.Run("holder dies", func(t *testing.T) {
		r := newMemRig(t)
		h := r.hold(r.json(instancelock.ProcessLock{PID: 4242}))
		r.procs.Add(4242, "", time.Now())
		attempts := make(chan struct{}, 100)
		r.fs.Before("open", memPIDPath, func() {
			select {
			case attempts <- struct{}{}:
			default:
			}
		})
		l := r.locker()
		done := make(chan error, 1)
		go func() { done <- l.Lock(context.Background()) }()
		for range 2 {
			select {
			case <-attempts:
			case <-time.After(10 * time.Second):
				t.Fatal("Lock did not try")
			}
		}
		select {
		case err := <-done:
			t.Fatalf("Lock returned %v while the holder lives", err)
		default:
		}
		require.NoError(t, h.Close())
		r.procs.Remove(4242)
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Fatal("Lock did not take over")
		}
		r.heldBy(l)
		require.NoError(t, l.Unlock())
	})
	t.Run("context ends", func(t *testing.T) {
		r := newMemRig(t)
		r.hold(r.json(instancelock.ProcessLock{PID: 4242, Hostname: "web-2"}))
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		err := r.locker().Lock(ctx)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.ErrorIs(t, err, instancelock.ErrAlreadyRunning)
	})
}

// attemptInPlace is the Windows way (lock the file at the path, then
// write it in place). These tests call one attempt directly (see
// export_test.go), to reach each of its outcomes.
func TestMemAttemptInPlace(t *testing.T) {
	host, err := os.Hostname()
	require.NoError(t, err)
	data := func(l *instancelock.Locker) []byte {
		b, err := instancelock.ProcessLock{PID: os.Getpid(), StartedAt: time.Now(), InstanceID: l.InstanceID(), Hostname: host}.MarshalJSON()
		require.NoError(t, err)
		return append(b, '\n')
	}
	setup := func(t *testing.T) (*memRig, *instancelock.Locker) {
		r := newMemRig(t)
		require.NoError(t, r.fs.MkdirAll(memPIDDir, 0o755))
		return r, r.locker()
	}
	t.Run("fresh, then contended", func(t *testing.T) {
		r, l := setup(t)
		want := data(l)
		f, outcome, _, err := instancelock.AttemptInPlace(l, want)
		require.NoError(t, err)
		require.Equal(t, "won", outcome)
		defer f.Close()
		assert.Equal(t, string(want), r.content())
		l2 := r.locker()
		_, outcome, holder, err := instancelock.AttemptInPlace(l2, data(l2))
		require.NoError(t, err)
		assert.Equal(t, "refused", outcome, "the holder (this process) is alive")
		assert.Equal(t, os.Getpid(), holder.Holder.PID)
		assert.Equal(t, string(want), r.content())
		assert.Equal(t, []string{memPIDPath}, r.fs.OpenFiles())
	})
	t.Run("empty file being created by another", func(t *testing.T) {
		r, l := setup(t)
		r.hold("")
		_, outcome, _, err := instancelock.AttemptInPlace(l, data(l))
		require.NoError(t, err)
		assert.Equal(t, "refused, transient", outcome)
		assert.Len(t, r.fs.OpenFiles(), 1)
	})
	t.Run("stale file rewritten", func(t *testing.T) {
		r, l := setup(t)
		r.write(strings.Repeat(" ", 100) + "\x00")
		want := data(l)
		f, outcome, _, err := instancelock.AttemptInPlace(l, want)
		require.NoError(t, err)
		require.Equal(t, "won", outcome)
		defer f.Close()
		assert.Equal(t, string(want), r.content())
	})
	t.Run("live legacy holder", func(t *testing.T) {
		r, l := setup(t)
		r.write("4242\n")
		require.NoError(t, r.fs.SetModTime(memPIDPath, time.Now()))
		r.procs.Add(4242, "", time.Now().Add(-time.Hour))
		_, outcome, are, err := instancelock.AttemptInPlace(l, data(l))
		require.NoError(t, err)
		require.Equal(t, "refused", outcome)
		assert.True(t, are.Unlocked, "a live legacy holder: %+v", are)
		assert.Equal(t, "4242\n", r.content())
		assert.Empty(t, r.fs.OpenFiles())
	})
	for _, how := range []string{"removed", "replaced"} {
		t.Run("new file "+how+" before it is locked", func(t *testing.T) {
			r, l := setup(t)
			r.fs.Before("lock", memPIDPath, func() {
				r.fs.Clear()
				require.NoError(t, r.fs.Remove(memPIDPath))
				if how == "replaced" {
					require.NoError(t, r.fs.WriteFile(memPIDPath, nil, 0o644))
				}
			})
			_, outcome, _, err := instancelock.AttemptInPlace(l, data(l))
			require.NoError(t, err)
			assert.Equal(t, "again", outcome)
			assert.Empty(t, r.fs.OpenFiles())
		})
	}
	bad := map[string]struct {
		setup func(r *memRig)
		is    error
		says  string
	}{
		"symlink":      {func(r *memRig) { require.NoError(r.t, r.fs.Symlink("x", memPIDPath)) }, instancelock.ErrSymlink, memPIDPath},
		"directory":    {func(r *memRig) { require.NoError(r.t, r.fs.MkdirAll(memPIDPath, 0o755)) }, instancelock.ErrNotRegular, memPIDPath},
		"open EACCES":  {func(r *memRig) { r.fs.Fail("open", memPIDPath, syscall.EACCES) }, fs.ErrPermission, "open " + memPIDPath},
		"fstat fails":  {func(r *memRig) { r.fs.Fail("stat", memPIDPath, syscall.EIO) }, syscall.EIO, memPIDPath},
		"lock fails":   {func(r *memRig) { r.fs.Fail("lock", memPIDPath, syscall.ENOLCK) }, syscall.ENOLCK, memPIDPath},
		"truncate":     {func(r *memRig) { r.fs.Fail("truncate", memPIDPath, syscall.EIO) }, syscall.EIO, "truncate " + memPIDPath},
		"write ENOSPC": {func(r *memRig) { r.fs.Fail("write", memPIDPath, syscall.ENOSPC) }, syscall.ENOSPC, "write " + memPIDPath},
	}
	t.Run("lstat fails after the lock", func(t *testing.T) {
		r, l := setup(t)
		r.fs.Fail("lstat", memPIDPath, syscall.EIO)
		_, outcome, _, err := instancelock.AttemptInPlace(l, data(l))
		require.NoError(t, err)
		assert.Equal(t, "again", outcome, "cannot tell that the file is still at the path: look again")
		assert.Empty(t, r.fs.OpenFiles())
	})
	for name, c := range bad {
		t.Run(name, func(t *testing.T) {
			r, l := setup(t)
			c.setup(r)
			_, _, _, err := instancelock.AttemptInPlace(l, data(l))
			assert.ErrorIs(t, err, c.is)
			assert.ErrorContains(t, err, c.says)
			assert.Empty(t, r.fs.OpenFiles())
		})
	}
}

func memErr2[T any](_ T, err error) error { return err }

func memErr3[A, B any](_ A, _ B, err error) error { return err }

// The in-place mode (Windows) refuses a symbolic link or a directory at the
// path before it opens anything, and an lstat failure is reported as is.
func TestMemInPlaceRefusesBadPaths(t *testing.T) {
	r := newMemRig(t)
	require.NoError(t, r.fs.MkdirAll(memPIDDir, 0o755))
	require.NoError(t, r.fs.WriteFile(memPIDDir+"/target", []byte("keep"), 0o644))
	require.NoError(t, r.fs.Symlink(memPIDDir+"/target", memPIDPath))
	l := r.locker()
	instancelock.WriteInPlace(l)
	err := l.TryLock()
	assert.ErrorContains(t, err, "symbolic link")
	assert.ErrorContains(t, err, memPIDPath)
	data, err := r.fs.ReadFile(memPIDDir + "/target")
	require.NoError(t, err)
	assert.Equal(t, "keep", string(data))

	require.NoError(t, r.fs.Remove(memPIDPath))
	r.fs.Fail("lstat", memPIDPath, syscall.EACCES)
	assert.ErrorIs(t, l.TryLock(), fs.ErrPermission)
	assert.Empty(t, r.fs.OpenFiles())
}

// A directory that does not let the Locker create files, with the PID file
// made for it (the /run/app layout): the file is locked and written in
// place, and emptied at Unlock, since it cannot be removed.
func TestMemInPlaceWhenTheDirectoryIsNotWritable(t *testing.T) {
	for name, fault := range map[string]func(r *memRig){
		"read-only directory": func(r *memRig) { require.NoError(r.t, r.fs.Chmod(memPIDDir, 0o555)) },
		"EACCES":              func(r *memRig) { r.fs.Fail("open", memPIDPath+".tmp-*", syscall.EACCES) },
		"EROFS":               func(r *memRig) { r.fs.Fail("open", memPIDPath+".tmp-*", syscall.EROFS) },
	} {
		t.Run(name, func(t *testing.T) {
			r := newMemRig(t)
			r.write(`{"pid":7,"st`) // a crash remnant
			before, err := r.fs.Lstat(memPIDPath)
			require.NoError(t, err)
			fault(r)
			a := r.locker()
			require.NoError(t, a.TryLock())
			now, err := r.fs.Lstat(memPIDPath)
			require.NoError(t, err)
			assert.True(t, r.fs.SameFile(before, now), "written in place")
			r.heldBy(a)
			b := r.locker()
			assert.ErrorIs(t, b.TryLock(), instancelock.ErrAlreadyRunning)
			require.NoError(t, a.Unlock())
			if name == "read-only directory" {
				assert.Empty(t, r.content(), "emptied, since it cannot be removed")
			}
			require.NoError(t, b.TryLock(), "free at once after Unlock")
			require.NoError(t, b.Unlock())
			r.untouched(r.mustList())
		})
	}
}
