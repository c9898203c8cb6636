//go:build unix

package instancelock

import (
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock/internal/proctest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func init() {
	helpers["layout-lock"] = helperLayoutLock
	helpers["layout-read"] = helperLayoutRead
	helpers["layout-stuck"] = helperLayoutStuck
}

// helperLayoutLock sets the umask to $UMASK (octal) when given, acquires
// $PIDFILE, prints "locked" (or "error <err>"), and releases the lock when
// stdin closes or says "unlock".
func helperLayoutLock() {
	if m := os.Getenv("UMASK"); m != "" {
		n, _ := strconv.ParseUint(m, 8, 32)
		syscall.Umask(int(n))
	}
	l, err := acquireWith(os.Getenv("PIDFILE"), noWatch)
	if err != nil {
		fmt.Println("error", strings.ReplaceAll(err.Error(), "\n", " "))
		return
	}
	fmt.Println("locked")
	io.Copy(io.Discard, os.Stdin)
	if err := l.Unlock(); err != nil {
		fmt.Println("error", err)
	}
}

// helperLayoutRead prints what Running says about $PIDFILE.
func helperLayoutRead() {
	l, err := New(os.Getenv("PIDFILE"))
	if err == nil {
		var h ProcessLock
		var running bool
		if h, running, err = l.Running(); err == nil {
			fmt.Println("running", running, h.PID)
			return
		}
	}
	fmt.Println("error", err)
}

// helperLayoutStuck creates its temporary file, prints "temp <name>" and
// hangs before publishing it, as a process killed at that moment would
// leave it.
func helperLayoutStuck() {
	testHookBeforePublish = func(tmp string) {
		fmt.Println("temp", tmp)
		select {}
	}
	_, err := acquireWith(os.Getenv("PIDFILE"), noWatch)
	fmt.Println("error", err)
}

// requireRoot skips a test that needs a second user unless the test runs
// as root; under CI=true it fails instead.
func requireRoot(t *testing.T, tools ...string) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root to run a helper as the user nobody"
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			why = "needs " + tool
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why)
}

// sharedDir returns a new directory that every user can enter (t.TempDir's
// parents are private), removed when the test ends.
func sharedDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "instancelock-layout-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

var (
	nobodyBinOnce sync.Once
	nobodyBin     string
)

// asNobody returns a helper command that runs as the user nobody, from a
// copy of the test binary that nobody can execute.
func asNobody(t *testing.T, name string, env ...string) *exec.Cmd {
	t.Helper()
	nobodyBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "instancelock-bin-")
		if err != nil {
			return
		}
		os.Chmod(dir, 0o755)
		data, err := os.ReadFile(os.Args[0])
		if err == nil && os.WriteFile(filepath.Join(dir, "test.bin"), data, 0o755) == nil {
			nobodyBin = filepath.Join(dir, "test.bin")
		}
	})
	require.NotEmpty(t, nobodyBin, "copying the test binary")
	cmd := helperCmd(t, name, env...)
	cmd.Args = append([]string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", nobodyBin}, cmd.Args[1:]...)
	cmd.Path, _ = exec.LookPath("setpriv")
	for i, kv := range cmd.Env {
		if strings.HasPrefix(kv, "GOCOVERDIR=") {
			cmd.Env[i] = "GOCOVERDIR=" // nobody cannot write the test's counters
		}
	}
	return cmd
}

func modeOf(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	return fi.Mode().Perm()
}

// Under umask 077 the file is 0644 and the directories the Locker creates
// are 0755, as documented, so another user can read the status; a
// directory that existed keeps its mode.
func TestModesUnderUmask077(t *testing.T) {
	requireRoot(t, "setpriv")
	base := sharedDir(t)
	mine := filepath.Join(base, "mine")
	require.NoError(t, os.Mkdir(mine, 0o711)) // the user's own directory
	require.NoError(t, os.Chmod(mine, 0o711))
	path := filepath.Join(mine, "new", "deeper", "app.pid")
	in, out := proctest.Start(t, helperCmd(t, "layout-lock", "PIDFILE="+path, "UMASK=077"))
	require.Equal(t, "locked", out.Next(20*time.Second))
	assert.Equal(t, fs.FileMode(0o644), modeOf(t, path))
	assert.Equal(t, fs.FileMode(0o755), modeOf(t, filepath.Dir(path)))
	assert.Equal(t, fs.FileMode(0o755), modeOf(t, filepath.Dir(filepath.Dir(path))))
	assert.Equal(t, fs.FileMode(0o711), modeOf(t, mine), "an existing directory is never changed")

	reader := asNobody(t, "layout-read", "PIDFILE="+path)
	got, err := reader.Output()
	require.NoError(t, err)
	assert.Regexp(t, `^running true \d+\n$`, string(got), "another user reads the status")
	in.(io.Closer).Close()
}

// The classic /run/app layout: a root-owned 0755 directory, the PID file
// created by root for the service user. The service user cannot create a
// temporary file there; it locks and writes the existing file in place,
// with the same guarantees.
func TestRootOwnedDirectoryWithAPreparedPIDFile(t *testing.T) {
	requireRoot(t, "setpriv")
	dir := filepath.Join(sharedDir(t), "run-app")
	require.NoError(t, os.Mkdir(dir, 0o755))
	path := filepath.Join(dir, "app.pid")
	require.NoError(t, os.WriteFile(path, nil, 0o644))
	require.NoError(t, os.Chown(path, 65534, 65534))
	before, err := os.Lstat(path)
	require.NoError(t, err)

	in, out := proctest.Start(t, asNobody(t, "layout-lock", "PIDFILE="+path))
	require.Equal(t, "locked", out.Next(20*time.Second))
	now, err := os.Lstat(path)
	require.NoError(t, err)
	assert.True(t, os.SameFile(before, now), "the prepared file itself holds the lock")
	h, err := ParseProcessLock(mustReadFile(t, path))
	require.NoError(t, err)
	entries, _ := os.ReadDir(dir)
	assert.Len(t, entries, 1)

	// A second instance of the service user is refused; so is root's.
	_, out2 := proctest.Start(t, asNobody(t, "layout-lock", "PIDFILE="+path))
	assert.Contains(t, out2.Next(20*time.Second), "already running")
	l, err := New(path)
	require.NoError(t, err)
	var are *AlreadyRunningError
	require.ErrorAs(t, l.TryLock(), &are)
	assert.Equal(t, h.PID, are.Holder.PID)
	_, running, err := l.Running()
	require.NoError(t, err)
	assert.True(t, running)

	// Released: the file cannot be removed, so it is emptied, and the next
	// start takes it at once.
	in.(io.Closer).Close()
	eventually(t, func() bool { _, running, err := l.Running(); return err == nil && !running })
	assert.Empty(t, mustReadFile(t, path))
	third := asNobody(t, "layout-lock", "PIDFILE="+path)
	_, out3 := proctest.Start(t, third)
	require.Equal(t, "locked", out3.Next(20*time.Second))
	// Killed: the next start takes the file over.
	require.NoError(t, third.Process.Kill())
	third.Wait()
	_, out4 := proctest.Start(t, asNobody(t, "layout-lock", "PIDFILE="+path))
	require.Equal(t, "locked", out4.Next(20*time.Second))
}

func mustReadFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return data
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Every legal name works: a final component of 240 to 255 bytes.
func TestLongNames(t *testing.T) {
	for _, n := range []int{240, 250, 255} {
		dir := t.TempDir()
		path := filepath.Join(dir, strings.Repeat("p", n-4)+".pid")
		require.Len(t, filepath.Base(path), n)
		l, err := acquireWith(path, noWatch)
		require.NoError(t, err, "%d bytes", n)
		_, err = l.Holder()
		require.NoError(t, err)
		// A stale file of that name is taken over too (rename).
		require.NoError(t, l.Unlock())
		startHolder(t, path).kill(t)
		require.NoError(t, l.TryLock(), "%d bytes, after a crash", n)
		require.NoError(t, l.Unlock())
		entries, _ := os.ReadDir(dir)
		assert.Empty(t, entries)
	}
}

// Temporary files left by processes killed between creating and
// publishing them are removed by the next holder; a live contender's is
// never removed.
func TestTempLeftoversOfCrashesAreRemoved(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.pid")
	temps := func() []string {
		m, err := filepath.Glob(path + ".tmp-*")
		require.NoError(t, err)
		return m
	}
	stuck := func() (*exec.Cmd, string) {
		// A crash remnant at the path: the start replaces it by way of a
		// temporary file (on Linux a start with no file at the path
		// creates none: see createHeld).
		require.NoError(t, os.WriteFile(path, nil, 0o644))
		cmd := helperCmd(t, "layout-stuck", "PIDFILE="+path)
		_, out := proctest.Start(t, cmd)
		line := out.Next(20 * time.Second)
		tmp, ok := strings.CutPrefix(line, "temp ")
		require.True(t, ok, line)
		return cmd, tmp
	}
	// Three processes die with their temporary file in place.
	for range 3 {
		cmd, tmp := stuck()
		require.FileExists(t, tmp)
		require.NoError(t, cmd.Process.Kill())
		cmd.Wait()
	}
	require.Len(t, temps(), 3)
	// A live contender is stuck in the same place.
	live, liveTmp := stuck()
	l, err := acquireWith(path, noWatch)
	if hasLockName {
		// On Linux the live contender holds the lock's socket: it is
		// about to be the holder, so the start is refused, and nothing of
		// it is touched.
		var are *AlreadyRunningError
		require.ErrorAs(t, err, &are)
		assert.Equal(t, live.Process.Pid, are.Holder.PID)
		assert.Contains(t, temps(), liveTmp)
	} else {
		require.NoError(t, err)
		assert.Equal(t, []string{liveTmp}, temps(), "the dead ones' are removed, the live one's is not")
		require.NoError(t, l.Unlock())
	}
	require.NoError(t, live.Process.Kill())
	live.Wait()
	l, err = acquireWith(path, noWatch)
	require.NoError(t, err)
	assert.Empty(t, temps())
	require.NoError(t, l.Unlock())

	// Many starts SIGKILLed at random moments during start-up: no pile-up.
	for i := range 60 {
		cmd := helperCmd(t, "layout-lock", "PIDFILE="+path)
		cmd.Stdin = strings.NewReader("")
		cmd.Stdout = io.Discard
		require.NoError(t, cmd.Start())
		time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
		cmd.Process.Kill()
		cmd.Wait()
		if i%3 == 0 {
			// and some die at the worst moment
			c, _ := stuck()
			c.Process.Kill()
			c.Wait()
		}
	}
	l, err = acquireWith(path, noWatch)
	require.NoError(t, err)
	assert.Empty(t, temps(), "the next holder removes every leftover")
	require.NoError(t, l.Unlock())
	entries, _ := os.ReadDir(dir)
	assert.Empty(t, entries)
}
