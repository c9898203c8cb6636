//go:build linux

package instancelock

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock/internal/proctest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// smallTmpfs mounts a tmpfs of size bytes on a new directory, unmounted
// when the test ends.
func smallTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := filepath.Join(sharedDir(t), "fs")
	require.NoError(t, os.Mkdir(dir, 0o755))
	require.NoError(t, unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0755"))
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// fillUp writes a file in dir until the file system is full.
func fillUp(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "filler"))
	require.NoError(t, err)
	defer f.Close()
	block := make([]byte, 512)
	for {
		if _, err := f.Write(block); err != nil {
			require.ErrorIs(t, err, syscall.ENOSPC)
			return
		}
	}
}

// On a full disk a start judges the file at the path as it does with room
// to spare: a live holder (in another network namespace, so that this
// contender holds the lock's names and tries the short way first) is
// ErrAlreadyRunning, someone's file is ErrForeignFile; only with no file
// at all is the failed write the error, naming the path once, and nothing
// is left behind.
func TestAFullDiskIsJudgedAsARoomyOne(t *testing.T) {
	requireRoot(t)
	dir := smallTmpfs(t, "16k")
	path := filepath.Join(dir, "app.pid")
	holder := helperCmd(t, "layout-lock", "PIDFILE="+path)
	holder.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	in, out := proctest.Start(t, holder)
	require.Equal(t, "locked", out.Next(20*time.Second))
	fillUp(t, dir)

	l, err := New(path)
	require.NoError(t, err)
	err = l.TryLock()
	var are *AlreadyRunningError
	require.ErrorAs(t, err, &are, "%v", err)
	assert.Equal(t, holder.Process.Pid, are.Holder.PID)
	assert.NotErrorIs(t, err, syscall.ENOSPC)
	in.(io.Closer).Close()
	holder.Wait()

	// Someone's file at the path.
	require.NoError(t, os.Remove(filepath.Join(dir, "filler")))
	writeFile(t, path, "key = value\n")
	fillUp(t, dir)
	err = l.TryLock()
	require.ErrorIs(t, err, ErrForeignFile)
	assert.NotErrorIs(t, err, syscall.ENOSPC)
	assert.Equal(t, 1, strings.Count(err.Error(), path), err.Error())
	assert.Equal(t, "key = value\n", string(mustReadFile(t, path)), "left as it is")

	// No file: the write's failure, said once.
	require.NoError(t, os.Remove(path))
	fillUp(t, dir)
	err = l.TryLock()
	require.ErrorIs(t, err, syscall.ENOSPC)
	assert.Equal(t, 1, strings.Count(err.Error(), path), err.Error())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "only the filler: no PID file, no temporary file")

	// With room again, the start succeeds.
	require.NoError(t, os.Remove(filepath.Join(dir, "filler")))
	require.NoError(t, l.TryLock())
	require.NoError(t, l.Unlock())
}

// bindFile bind-mounts the file src on the file dst (as docker -v
// /host/app.pid:/app/data/app.pid does), unmounted when the test ends.
func bindFile(t *testing.T, src, dst string) {
	t.Helper()
	require.NoError(t, unix.Mount(src, dst, "", unix.MS_BIND, ""))
	t.Cleanup(func() { unix.Unmount(dst, unix.MNT_DETACH) })
}

// A PID file that is itself a mount point cannot be replaced (EBUSY): it
// is written in place, empty, stale or left by a killed holder alike, and
// emptied at release; a live holder of it is refused as usual.
func TestAPIDFileThatIsAMountPoint(t *testing.T) {
	requireRoot(t)
	host := filepath.Join(t.TempDir(), "host.pid")
	writeFile(t, host, "")
	path := filepath.Join(t.TempDir(), "app.pid")
	writeFile(t, path, "")
	bindFile(t, host, path)

	for _, content := range []string{"", "999999\n", lockJSON(t, ProcessLock{PID: deadPID(t), Hostname: "elsewhere"})} {
		writeFile(t, host, content)
		l, err := acquireWith(path, noWatch)
		require.NoError(t, err, "content %q", content)
		h, err := ParseProcessLock(mustReadFile(t, host))
		require.NoError(t, err, "the mounted file itself is written")
		assert.Equal(t, os.Getpid(), h.PID)
		require.NoError(t, l.Unlock())
		assert.Empty(t, mustReadFile(t, host), "emptied at release")
		_, err = os.Stat(path)
		require.NoError(t, err, "still mounted")
	}

	// A holder killed: the next one takes the file over; a live one is
	// refused.
	startHolder(t, path).kill(t)
	h := startHolder(t, path)
	l, err := New(path)
	require.NoError(t, err)
	var are *AlreadyRunningError
	require.ErrorAs(t, l.TryLock(), &are)
	assert.Equal(t, h.pid, are.Holder.PID)
	h.kill(t)
	require.NoError(t, l.TryLock())
	require.NoError(t, l.Unlock())
}

func ownerOf(t *testing.T, path string) int {
	t.Helper()
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	return int(fi.Sys().(*syscall.Stat_t).Uid)
}

// The documented layout, a root-owned directory with the PID file prepared
// for the service user: a start by root in between (sudo ./backend, a
// cron job) takes the service user's file in place, and leaves it at
// release, emptied, still the service user's, so that the service starts
// again; after a crash of the service too.
func TestRootStartingOnceKeepsThePreparedFile(t *testing.T) {
	requireRoot(t, "setpriv")
	dir := filepath.Join(sharedDir(t), "run-app")
	require.NoError(t, os.Mkdir(dir, 0o755))
	path := filepath.Join(dir, "app.pid")
	writeFile(t, path, "")
	require.NoError(t, os.Chmod(path, 0o640))
	require.NoError(t, os.Chown(path, 65534, 65534))
	prepared, err := os.Lstat(path)
	require.NoError(t, err)
	kept := func(what string) {
		t.Helper()
		now, err := os.Lstat(path)
		require.NoError(t, err, what)
		assert.True(t, os.SameFile(prepared, now), "%s: the prepared file itself", what)
		assert.Equal(t, 65534, ownerOf(t, path), "%s: owner", what)
		assert.Equal(t, fs.FileMode(0o640), modeOf(t, path), "%s: mode", what)
	}
	service := func() (io.Writer, *proctest.Lines) {
		t.Helper()
		cmd := asNobody(t, "layout-lock", "PIDFILE="+path)
		in, out := proctest.Start(t, cmd)
		require.Equal(t, "locked", out.Next(20*time.Second))
		kept("the service holds it")
		return in, out
	}

	in, _ := service()
	in.(io.Closer).Close()
	eventually(t, func() bool { return len(mustReadFile(t, path)) == 0 })

	crash := func() {
		t.Helper()
		// The service crashes: its file stays, stale.
		cmd := asNobody(t, "layout-lock", "PIDFILE="+path)
		_, out := proctest.Start(t, cmd)
		require.Equal(t, "locked", out.Next(20*time.Second))
		require.NoError(t, cmd.Process.Kill())
		cmd.Wait()
		require.NotEmpty(t, mustReadFile(t, path))
	}
	for _, stale := range []bool{false, true} {
		if stale {
			crash()
		}
		// Root starts once.
		l, err := acquireWith(path, noWatch)
		require.NoError(t, err, "stale %v", stale)
		kept("root holds it")
		h, err := ParseProcessLock(mustReadFile(t, path))
		require.NoError(t, err)
		assert.Equal(t, os.Getpid(), h.PID)
		require.NoError(t, l.Unlock())
		kept("root released it")
		assert.Empty(t, mustReadFile(t, path))

		in, _ := service()
		in.(io.Closer).Close()
		eventually(t, func() bool { return len(mustReadFile(t, path)) == 0 })
	}

	// Root cleans up after a crash (CleanStale, instancelock stop): the
	// file is emptied, not removed.
	crash()
	l, err := New(path)
	require.NoError(t, err)
	cleaned, err := l.CleanStale()
	require.NoError(t, err)
	assert.True(t, cleaned)
	kept("cleaned by root")
	assert.Empty(t, mustReadFile(t, path))
	in, _ = service()
	in.(io.Closer).Close()
}

// A stale file of this user's own that is replaced keeps its permission
// bits (an administrator's chmod 600); a new file is 0644.
func TestAReplacedFileKeepsItsMode(t *testing.T) {
	requireRoot(t, "setpriv")
	dir := filepath.Join(sharedDir(t), "data")
	require.NoError(t, os.Mkdir(dir, 0o755))
	require.NoError(t, os.Chown(dir, 65534, 65534))
	path := filepath.Join(dir, "app.pid")

	crash := func() {
		t.Helper()
		cmd := asNobody(t, "layout-lock", "PIDFILE="+path)
		_, out := proctest.Start(t, cmd)
		require.Equal(t, "locked", out.Next(20*time.Second))
		require.NoError(t, cmd.Process.Kill())
		cmd.Wait()
	}
	crash()
	assert.Equal(t, fs.FileMode(0o644), modeOf(t, path), "a new file")
	require.NoError(t, os.Chmod(path, 0o600))
	before, err := os.Lstat(path)
	require.NoError(t, err)
	crash() // takes the stale file over by a new file
	now, err := os.Lstat(path)
	require.NoError(t, err)
	require.False(t, os.SameFile(before, now), "replaced")
	assert.Equal(t, fs.FileMode(0o600), modeOf(t, path), "the mode is kept")
	assert.Equal(t, 65534, ownerOf(t, path))

	// Root once in between: the service user's file stays the service
	// user's, with its mode; then the service starts again.
	l, err := acquireWith(path, noWatch)
	require.NoError(t, err)
	require.NoError(t, l.Unlock())
	assert.Equal(t, fs.FileMode(0o600), modeOf(t, path))
	assert.Equal(t, 65534, ownerOf(t, path))
	crash()
	assert.Equal(t, fs.FileMode(0o600), modeOf(t, path))
	assert.Equal(t, 65534, ownerOf(t, path))

	// A stale file of another user that this user cannot write is
	// replaced, as before (a directory this user may write).
	other := filepath.Join(sharedDir(t), "app.pid")
	require.NoError(t, os.Chmod(filepath.Dir(other), 0o777))
	writeFile(t, other, lockJSON(t, ProcessLock{PID: deadPID(t), Hostname: "elsewhere"}))
	cmd := asNobody(t, "layout-lock", "PIDFILE="+other)
	in, out := proctest.Start(t, cmd)
	require.Equal(t, "locked", out.Next(20*time.Second))
	assert.Equal(t, 65534, ownerOf(t, other))
	in.(io.Closer).Close()
	cmd.Wait()
	_, err = os.Lstat(other)
	assert.True(t, errors.Is(err, fs.ErrNotExist), "its own file is removed at release")
}

// A stale file of this user's own that is replaced keeps its group too
// (root:nogroup 0640: the group's readers keep their access) when the
// process may set it; a user who may not (not a member of the group)
// still starts, and the new file keeps the mode.
func TestAReplacedFileKeepsItsGroup(t *testing.T) {
	requireRoot(t, "setpriv")
	stale := lockJSON(t, ProcessLock{PID: deadPID(t), Hostname: "elsewhere"})

	// Root, which may set any group.
	dir := filepath.Join(sharedDir(t), "root")
	require.NoError(t, os.Mkdir(dir, 0o755))
	path := filepath.Join(dir, "app.pid")
	writeFile(t, path, stale)
	require.NoError(t, os.Chown(path, 0, 65534))
	require.NoError(t, os.Chmod(path, 0o640))
	before, err := os.Lstat(path)
	require.NoError(t, err)
	l, err := acquireWith(path, noWatch)
	require.NoError(t, err)
	now, err := os.Lstat(path)
	require.NoError(t, err)
	require.False(t, os.SameFile(before, now), "replaced")
	assert.Equal(t, 0, ownerOf(t, path))
	assert.Equal(t, 65534, groupOf(t, path), "the group is kept")
	assert.Equal(t, fs.FileMode(0o640), modeOf(t, path), "the mode is kept")
	require.NoError(t, l.Unlock())

	// nobody (its groups cleared) replaces its own file whose group is
	// root's: it may not keep the group, and starts all the same.
	dir = filepath.Join(sharedDir(t), "nobody")
	require.NoError(t, os.Mkdir(dir, 0o755))
	require.NoError(t, os.Chown(dir, 65534, 65534))
	path = filepath.Join(dir, "app.pid")
	writeFile(t, path, stale)
	require.NoError(t, os.Chown(path, 65534, 0))
	require.NoError(t, os.Chmod(path, 0o640))
	before, err = os.Lstat(path)
	require.NoError(t, err)
	cmd := asNobody(t, "layout-lock", "PIDFILE="+path)
	in, out := proctest.Start(t, cmd)
	require.Equal(t, "locked", out.Next(20*time.Second))
	now, err = os.Lstat(path)
	require.NoError(t, err)
	require.False(t, os.SameFile(before, now), "replaced")
	assert.Equal(t, 65534, ownerOf(t, path))
	assert.Equal(t, 65534, groupOf(t, path), "the group nobody may not set is not kept")
	assert.Equal(t, fs.FileMode(0o640), modeOf(t, path), "the mode is kept")
	in.(io.Closer).Close()
	require.NoError(t, cmd.Wait())
}

func groupOf(t *testing.T, path string) int {
	t.Helper()
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	return int(fi.Sys().(*syscall.Stat_t).Gid)
}

func init() { helpers["layout-squat"] = helperLayoutSquat }

// helperLayoutSquat does what any user who can read $PIDFILE can: it binds
// the lock's name (as the holder would) and holds a shared flock on the
// file, prints "squatting", and keeps both until stdin closes.
func helperLayoutSquat() {
	path := os.Getenv("PIDFILE")
	fd, err := bindName(lockName(path))
	if err != nil {
		fmt.Println("error", err)
		return
	}
	defer closeName(fd)
	f, err := os.Open(path)
	if err == nil {
		err = unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
	}
	if err != nil {
		fmt.Println("error", err)
		return
	}
	fmt.Println("squatting")
	io.Copy(io.Discard, os.Stdin)
	f.Close()
}

// asUID is asNobody for another user: uid and gid n.
func asUID(t *testing.T, n int, name string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := asNobody(t, name, env...)
	id := strconv.Itoa(n)
	cmd.Args[1], cmd.Args[2] = "--reuid="+id, "--regid="+id
	return cmd
}

// A user who can only read the PID file binds the lock's name (so that a
// start holds none) and holds a shared flock on the stale file: starts
// cannot safely take the file over, but they are not refused as "already
// running" with the dead pid. TryLock (as the service user and as root),
// Running and CleanStale give one error, matching ErrWouldBlock, naming
// the squatter's shared lock and its socket; once it leaves, the service
// starts. Likewise in the in-place layout after a clean stop.
func TestReadersWithTheNameBlockHonestly(t *testing.T) {
	requireRoot(t, "setpriv")
	for _, layout := range []string{"service directory, crash", "prepared file, clean stop"} {
		t.Run(layout, func(t *testing.T) {
			dir := filepath.Join(sharedDir(t), "data")
			require.NoError(t, os.Mkdir(dir, 0o755))
			path := filepath.Join(dir, "app.pid")
			service := asNobody(t, "layout-lock", "PIDFILE="+path)
			if layout == "service directory, crash" {
				require.NoError(t, os.Chown(dir, 65534, 65534))
				_, out := proctest.Start(t, service)
				require.Equal(t, "locked", out.Next(20*time.Second))
				require.NoError(t, service.Process.Kill())
				service.Wait()
			} else {
				writeFile(t, path, "")
				require.NoError(t, os.Chown(path, 65534, 65534))
				in, out := proctest.Start(t, service)
				require.Equal(t, "locked", out.Next(20*time.Second))
				in.(io.Closer).Close()
				service.Wait()
				require.Empty(t, mustReadFile(t, path))
			}
			squatter := asUID(t, 1234, "layout-squat", "PIDFILE="+path)
			sin, sout := proctest.Start(t, squatter)
			require.Equal(t, "squatting", sout.Next(20*time.Second))
			spid := strconv.Itoa(squatter.Process.Pid)

			says := func(msg string) {
				t.Helper()
				assert.Contains(t, msg, "no instance holds the lock")
				assert.Contains(t, msg, "shared locks hold the file (pid "+spid+":")
				assert.Contains(t, msg, "bound by pid "+spid+" (uid 1234)")
				assert.NotContains(t, msg, "already running")
				assert.Equal(t, 1, strings.Count(msg, path), msg)
			}
			_, out := proctest.Start(t, asNobody(t, "layout-lock", "PIDFILE="+path))
			line := out.Next(20 * time.Second)
			require.True(t, strings.HasPrefix(line, "error "), line)
			says(line)

			l, err := New(path)
			require.NoError(t, err)
			err = l.TryLock()
			require.ErrorIs(t, err, ErrWouldBlock)
			require.NotErrorIs(t, err, ErrAlreadyRunning)
			says(err.Error())
			_, running, rerr := l.Running()
			require.ErrorIs(t, rerr, ErrWouldBlock, "Running says what TryLock says")
			assert.False(t, running)
			assert.Equal(t, err.Error(), rerr.Error())
			_, cerr := l.CleanStale()
			require.ErrorIs(t, cerr, ErrWouldBlock)
			_, err = os.Stat(path)
			require.NoError(t, err, "nothing removed")

			sin.(io.Closer).Close()
			squatter.Wait()
			_, out = proctest.Start(t, asNobody(t, "layout-lock", "PIDFILE="+path))
			require.Equal(t, "locked", out.Next(20*time.Second))
		})
	}
}
