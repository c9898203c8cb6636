package instancelock

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock/internal/proctest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func init() {
	helpers["pidfile-hold"] = helperHold
	helpers["pidfile-sleep"] = func() { time.Sleep(time.Minute) }
}

// helperHold acquires the lock at $PIDFILE, prints "locked <pid>", then
// waits for a line on stdin: "unlock" releases and exits, "spawn" starts a
// child process (which inherits nothing) and prints "child <pid>".
// With $WAIT=1 it waits for the lock with Lock instead of TryLock.
func helperHold() {
	l, err := newWith(os.Getenv("PIDFILE"), func(l *Locker) { l.Port = 4321 }, noWatch)
	if err != nil {
		fmt.Println("error", err)
		return
	}
	if os.Getenv("WAIT") == "1" {
		err = l.Lock(context.Background())
	} else {
		err = l.TryLock()
	}
	if err != nil {
		fmt.Println("error", err)
		return
	}
	fmt.Println("locked", os.Getpid())
	var cmd string
	for {
		if _, err := fmt.Scanln(&cmd); err != nil {
			return
		}
		switch cmd {
		case "unlock":
			fmt.Println("unlocked", l.Unlock())
			return
		case "spawn":
			c := exec.Command(os.Args[0], "-test.run=^$")
			c.Env = append(os.Environ(), helperEnv+"=pidfile-sleep")
			if err := c.Start(); err != nil {
				fmt.Println("error", err)
				return
			}
			fmt.Println("child", c.Process.Pid)
		}
	}
}

// holder is a helper process that holds the lock.
type holder struct {
	cmd *exec.Cmd
	out *proctest.Lines
	in  interface{ Write([]byte) (int, error) }
	pid int
}

func startHolder(t *testing.T, path string, env ...string) *holder {
	t.Helper()
	cmd := helperCmd(t, "pidfile-hold", append([]string{"PIDFILE=" + path}, env...)...)
	in, err := cmd.StdinPipe()
	require.NoError(t, err)
	out := proctest.NewLines(t, cmd)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	h := &holder{cmd: cmd, out: out, in: in}
	line := out.Next(20 * time.Second)
	require.True(t, strings.HasPrefix(line, "locked "), line)
	h.pid, _ = strconv.Atoi(strings.TrimPrefix(line, "locked "))
	return h
}

// kill kills the holder the hard way (SIGKILL on Unix, TerminateProcess on
// Windows) and waits for it.
func (h *holder) kill(t *testing.T) {
	t.Helper()
	require.NoError(t, h.cmd.Process.Kill())
	h.cmd.Wait()
}

// deadPID returns the pid of a process that has exited.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	require.NoError(t, cmd.Run())
	return cmd.Process.Pid
}

func TestTryLockPublishesTheProcessLock(t *testing.T) {
	checkNoGoroutineLeak(t)
	path := filepath.Join(t.TempDir(), "data", "backend.pid")
	l, err := acquireWith(path, func(l *Locker) { l.Port = 3000 })
	require.NoError(t, err)
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.True(t, strings.HasSuffix(string(data), "}\n"))
	pl, err := ParseProcessLock(data)
	require.NoError(t, err)
	info, held := l.Info()
	require.True(t, held)
	assert.True(t, pl.Equal(info), "%+v != %+v", pl, info)
	assert.Equal(t, os.Getpid(), pl.PID)
	assert.Equal(t, 3000, pl.Port)
	assert.Equal(t, l.InstanceID(), pl.InstanceID)
	assert.NoError(t, l.Err())

	assertCreatedModes(t, path)

	h, err := l.Holder()
	require.NoError(t, err)
	assert.True(t, h.Equal(pl))
	got, running, err := l.Running()
	require.NoError(t, err)
	assert.True(t, running)
	assert.True(t, got.Equal(pl))

	err = l.TryLock()
	assert.ErrorIs(t, err, ErrAlreadyHeld)

	require.NoError(t, l.Unlock())
	assert.NoFileExists(t, path)
	assert.ErrorIs(t, l.Err(), ErrNotHeld)
	require.NoError(t, l.Unlock(), "Unlock is idempotent")
	_, held = l.Info()
	assert.False(t, held)
	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	assert.Empty(t, entries, "no temporary file is left behind")
	_, err = l.Holder()
	assert.ErrorIs(t, err, ErrNotRunning)
	assert.ErrorIs(t, err, fs.ErrNotExist)
	_, running, err = l.Running()
	assert.NoError(t, err)
	assert.False(t, running)
}

func TestSecondLockerGetsAlreadyRunningWithTheHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.pid")
	h := startHolder(t, path)
	before, err := os.ReadFile(path)
	require.NoError(t, err)

	l, err := New(path)
	require.NoError(t, err)
	err = l.TryLock()
	require.ErrorIs(t, err, ErrAlreadyRunning)
	var are *AlreadyRunningError
	require.ErrorAs(t, err, &are)
	assert.Equal(t, h.pid, are.Holder.PID)
	assert.Equal(t, 4321, are.Holder.Port)
	assert.Equal(t, path, are.Path)
	assert.Contains(t, err.Error(), "pid "+strconv.Itoa(h.pid))
	help := are.Help("./backend")
	for _, want := range []string{
		"PID:      " + strconv.Itoa(h.pid), "Port:     4321", "Started:  ",
		"kill " + strconv.Itoa(h.pid), "kill -9 " + strconv.Itoa(h.pid) + " && ./backend",
		"curl http://localhost:4321/api/health",
	} {
		assert.Contains(t, help, want)
	}

	after, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, before, after, "the loser must not touch the winner's file")
	entries, _ := os.ReadDir(filepath.Dir(path))
	assert.Len(t, entries, 1, "the loser leaves no temporary file")

	pl, running, err := l.Running()
	require.NoError(t, err)
	assert.True(t, running)
	assert.Equal(t, h.pid, pl.PID)
	cleaned, err := l.CleanStale()
	require.NoError(t, err)
	assert.False(t, cleaned, "a live holder's file is kept")
	assert.FileExists(t, path)

	_, err = Acquire(path)
	assert.ErrorIs(t, err, ErrAlreadyRunning)
}

// Crash recovery: after SIGKILL of the holder the next start acquires at
// once, with no waiting and no age heuristic.
func TestTakeoverAfterSIGKILL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.pid")
	h := startHolder(t, path)
	h.kill(t)
	require.FileExists(t, path, "a SIGKILLed holder leaves its file")

	l, err := New(path)
	require.NoError(t, err)
	pl, running, err := l.Running()
	require.NoError(t, err)
	assert.False(t, running)
	assert.Equal(t, h.pid, pl.PID)
	require.NoError(t, l.TryLock())
	info, _ := l.Info()
	got, err := l.Holder()
	require.NoError(t, err)
	assert.True(t, got.Equal(info))
	require.NoError(t, l.Unlock())
}

func TestCleanStaleRemovesADeadHoldersFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.pid")
	h := startHolder(t, path)
	h.kill(t)
	l, err := New(path)
	require.NoError(t, err)
	cleaned, err := l.CleanStale()
	require.NoError(t, err)
	assert.True(t, cleaned)
	assert.NoFileExists(t, path)
	cleaned, err = l.CleanStale()
	require.NoError(t, err)
	assert.False(t, cleaned, "nothing left to clean")
}

func TestLockWaitsForReleaseAndForDeath(t *testing.T) {
	for _, how := range []string{"unlock", "kill"} {
		t.Run(how, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.pid")
			h := startHolder(t, path)
			l, err := New(path)
			require.NoError(t, err)
			done := make(chan error, 1)
			go func() { done <- l.Lock(context.Background()) }()
			select {
			case err := <-done:
				t.Fatalf("Lock returned %v while the lock was held", err)
			case <-time.After(100 * time.Millisecond):
			}
			if how == "unlock" {
				fmt.Fprintln(h.in, "unlock")
				assert.Equal(t, "unlocked <nil>", h.out.Next(10*time.Second))
			} else {
				h.kill(t)
			}
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(10 * time.Second):
				t.Fatal("Lock did not return after the holder let go")
			}
			require.NoError(t, l.Unlock())
		})
	}
}

func TestLockStopsWhenTheContextEnds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.pid")
	h := startHolder(t, path)
	l, err := New(path)
	require.NoError(t, err)
	cause := errors.New("gave up")
	ctx, cancel := context.WithCancelCause(context.Background())
	time.AfterFunc(50*time.Millisecond, func() { cancel(cause) })
	err = l.Lock(ctx)
	assert.ErrorIs(t, err, cause)
	assert.ErrorIs(t, err, ErrAlreadyRunning)
	var are *AlreadyRunningError
	require.ErrorAs(t, err, &are)
	assert.Equal(t, h.pid, are.Holder.PID)
}

// The lock does not leak into children: a process started by the holder
// does not keep the lock once the holder has died.
func TestChildDoesNotInheritTheLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.pid")
	h := startHolder(t, path)
	fmt.Fprintln(h.in, "spawn")
	line := h.out.Expect("child ", 10*time.Second)
	child, err := strconv.Atoi(strings.TrimPrefix(line, "child "))
	require.NoError(t, err)
	t.Cleanup(func() {
		if p, err := os.FindProcess(child); err == nil {
			p.Kill()
		}
	})
	h.kill(t)
	alive, err := osProcesses{}.Alive(child)
	require.NoError(t, err)
	require.True(t, alive, "the child outlives the holder")

	l, err := New(path)
	require.NoError(t, err)
	require.NoError(t, l.TryLock(), "the child must not keep the lock")
	require.NoError(t, l.Unlock())
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
}

func lockJSON(t *testing.T, pl ProcessLock) string {
	t.Helper()
	if pl.StartedAt.IsZero() {
		pl.StartedAt = time.Now()
	}
	return string(mustMarshal(t, pl)) + "\n"
}

// PID reuse is harmless, and files of other hosts are not judged by pid.
func TestStaleFilesAreTakenOver(t *testing.T) {
	host, _ := os.Hostname()
	sleeper := helperCmd(t, "pidfile-sleep")
	require.NoError(t, sleeper.Start())
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	live := sleeper.Process.Pid
	liveToken, liveStart, err := osProcesses{}.Start(live)
	require.NoError(t, err)

	cases := map[string]string{
		"empty":                "",
		"cut off":              `{"pid":123,"startedAt":"2026-01-0` + "\x00\x00",
		"NUL bytes":            strings.Repeat("\x00", 97),
		"a lone newline":       "\n",
		"dead pid JSON":        lockJSON(t, ProcessLock{PID: deadPID(t), Hostname: host, StartToken: "linux:x:1"}),
		"dead pid legacy":      strconv.Itoa(deadPID(t)) + "\n",
		"reused pid, token":    lockJSON(t, ProcessLock{PID: live, Hostname: host, StartToken: liveToken + "0"}),
		"reused pid, no token": lockJSON(t, ProcessLock{PID: live, Hostname: host, StartedAt: liveStart.Add(-time.Hour)}),
		"our own pid":          lockJSON(t, ProcessLock{PID: os.Getpid(), Hostname: host, InstanceID: "a previous run"}),
		"our own pid, legacy":  strconv.Itoa(os.Getpid()) + "\n",
		"other host, unlocked": lockJSON(t, ProcessLock{PID: live, Hostname: "elsewhere", StartToken: liveToken}),
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.pid")
			writeFile(t, path, content)
			l, err := New(path)
			require.NoError(t, err)
			_, running, err := l.Running()
			require.NoError(t, err)
			assert.False(t, running)
			require.NoError(t, l.TryLock())
			info, _ := l.Info()
			got, err := l.Holder()
			require.NoError(t, err)
			assert.True(t, got.Equal(info))
			require.NoError(t, l.Unlock())
		})
	}
	// A legacy file whose pid is older than the file: the process that
	// wrote it may be alive and not use a kernel lock. It blocks.
	t.Run("legacy file of a live process", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "x.pid")
		writeFile(t, path, strconv.Itoa(live)+"\n")
		l, err := New(path)
		require.NoError(t, err)
		err = l.TryLock()
		var are *AlreadyRunningError
		require.ErrorAs(t, err, &are)
		assert.Equal(t, live, are.Holder.PID)
		assert.True(t, are.Unlocked)
		assert.NotContains(t, are.Help("app"), "The lock is held")
		assert.Contains(t, are.Help("app"), "does not hold the lock (the lock is free)")
		// Running gives the same verdict: nothing holds the lock, and
		// starts refuse while pid live lives.
		_, running, err := l.Running()
		assert.False(t, running)
		var rare *AlreadyRunningError
		require.ErrorAs(t, err, &rare)
		assert.True(t, rare.Unlocked)
		assert.Equal(t, live, rare.Holder.PID)
		terr := l.Terminate(nil)
		assert.ErrorIs(t, terr, ErrNotRunning, "pid %d does not hold the lock: never signalled", live)
		assert.ErrorContains(t, terr, fmt.Sprintf("pid %d is alive but does not hold the lock", live))
		cleaned, err := l.CleanStale()
		require.NoError(t, err)
		assert.False(t, cleaned)
		// A legacy file older than the live process: the pid was reused.
		old := liveStart.Add(-time.Hour)
		require.NoError(t, os.Chtimes(path, old, old))
		require.NoError(t, l.TryLock())
		require.NoError(t, l.Unlock())
	})
	// This package's JSON is written only under the kernel lock: an
	// unlocked one naming a live process (with its real start token) is a
	// copy or a forgery, and stale. Running, CleanStale and TryLock agree.
	t.Run("JSON of a live process without a kernel lock", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "x.pid")
		writeFile(t, path, lockJSON(t, ProcessLock{PID: live, Hostname: host, StartToken: liveToken}))
		l, err := New(path)
		require.NoError(t, err)
		_, running, err := l.Running()
		require.NoError(t, err)
		assert.False(t, running)
		assert.ErrorIs(t, l.Terminate(nil), ErrNotRunning)
		cleaned, err := l.CleanStale()
		require.NoError(t, err)
		assert.True(t, cleaned)
		writeFile(t, path, lockJSON(t, ProcessLock{PID: live, Hostname: host, StartToken: liveToken}))
		require.NoError(t, l.TryLock())
		require.NoError(t, l.Unlock())
	})
}

// A file from another host is judged by its kernel lock only: a holder
// that keeps the lock blocks, even when its pid is dead on this host.
func TestOtherHostHolderIsNotJudgedByPID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.pid")
	h := startHolder(t, path)
	// Rewrite the content in place (the holder keeps its lock on the same
	// inode) to look like another host's process with a pid dead here.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	require.NoError(t, err)
	_, err = f.WriteString(lockJSON(t, ProcessLock{PID: deadPID(t), Hostname: "web-2"}))
	require.NoError(t, err)
	require.NoError(t, f.Close())

	l, err := New(path)
	require.NoError(t, err)
	err = l.TryLock()
	var are *AlreadyRunningError
	require.ErrorAs(t, err, &are)
	if hasLockName {
		// The lock's socket names the real holder, on this host; the file
		// names someone else, so nothing is proven and nothing signalled.
		assert.Equal(t, h.pid, are.Holder.PID)
		assert.False(t, are.Proven)
		assert.NotContains(t, are.Help("x"), "kill ")
		err = l.Terminate(nil)
		assert.ErrorContains(t, err, "not proven")
		assert.ErrorIs(t, err, ErrAlreadyRunning)
		alive, _ := osProcesses{}.Alive(h.pid)
		assert.True(t, alive, "the holder was not signalled")
	} else {
		assert.Equal(t, "web-2", are.Holder.Hostname)
		err = l.Terminate(nil)
		assert.ErrorContains(t, err, "another host")
		assert.ErrorIs(t, err, ErrAlreadyRunning)
	}
	h.kill(t)
}

func TestTerminate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.pid")
	l, err := New(path)
	require.NoError(t, err)
	assert.ErrorIs(t, l.Terminate(nil), ErrNotRunning, "no file")

	h := startHolder(t, path)
	require.NoError(t, l.Terminate(nil))
	err = h.cmd.Wait()
	assertTerminated(t, err)
	assert.ErrorIs(t, l.Terminate(os.Kill), ErrNotRunning, "stale file")

	own, err := Acquire(path)
	require.NoError(t, err)
	defer own.Unlock()
	other, err := New(path)
	require.NoError(t, err)
	assert.ErrorContains(t, other.Terminate(nil), "held by this process")
	assert.ErrorIs(t, other.Terminate(nil), ErrAlreadyHeld)
	assert.ErrorIs(t, own.Terminate(nil), ErrAlreadyHeld)
}

// A vanished lock file is noticed: with DisableRepublish Lost is
// closed and Err reports it, and Unlock leaves alone the file that a
// second instance created meanwhile. On Linux no second instance of this
// host can start while the first lives (the lock's socket).
func TestVanishedFileIsReported(t *testing.T) {
	for _, how := range []string{"removed", "replaced"} {
		t.Run(how, func(t *testing.T) {
			checkNoGoroutineLeak(t)
			path := filepath.Join(t.TempDir(), "x.pid")
			l, err := acquireWith(path, watchEvery(10*time.Millisecond), noRepublish)
			require.NoError(t, err)
			lost := l.Lost()
			require.NotNil(t, lost)
			if !publishByRename {
				// Windows: the held PID file is open without
				// FILE_SHARE_DELETE, so it can be neither removed nor
				// replaced, and the lock cannot be lost this way.
				before, err := os.ReadFile(path)
				require.NoError(t, err)
				if how == "removed" {
					require.Error(t, os.Remove(path), "a held PID file cannot be removed on Windows")
				} else {
					writeFile(t, path+".new", "not a pid file")
					require.Error(t, os.Rename(path+".new", path), "a held PID file cannot be replaced on Windows")
				}
				after, err := os.ReadFile(path)
				require.NoError(t, err)
				assert.Equal(t, string(before), string(after))
				// The watcher's check finds its file in place.
				l.mu.Lock()
				cerr := l.check(l.t, true)
				l.mu.Unlock()
				require.NoError(t, cerr)
				require.NoError(t, l.Err())
				require.NoError(t, l.Unlock())
				assert.NoFileExists(t, path)
				return
			}
			if how == "removed" {
				require.NoError(t, os.Remove(path))
			} else {
				writeFile(t, path+".new", "")
				require.NoError(t, os.Rename(path+".new", path))
			}
			select {
			case <-lost:
			case <-time.After(10 * time.Second):
				t.Fatal("the loss was not reported")
			}
			assert.ErrorIs(t, l.Err(), ErrLockLost)
			assert.ErrorContains(t, l.Err(), how)

			second, err := acquireWith(path, noWatch)
			if hasLockName {
				require.ErrorIs(t, err, ErrAlreadyRunning, "the first still holds the lock's socket")
				var are *AlreadyRunningError
				require.ErrorAs(t, err, &are)
				assert.Equal(t, os.Getpid(), are.Holder.PID)
				require.NoError(t, l.Unlock())
				second, err = acquireWith(path, noWatch)
				require.NoError(t, err, "the first released: the next start acquires at once")
				require.NoError(t, second.Unlock())
				return
			}
			require.NoError(t, err, "with the file gone, a second instance can start: this is why the host must act on Lost")
			require.NoError(t, l.Unlock())
			assert.FileExists(t, path, "Unlock of the lost lock leaves the new holder's file")
			require.NoError(t, second.Unlock())
			assert.Nil(t, l.Lost())
		})
	}
}

// Bad paths fail clearly and touch nothing.
func TestBadPathsFailClearly(t *testing.T) {
	t.Run("symlink", func(t *testing.T) {
		dir := t.TempDir()
		target := filepath.Join(dir, "precious")
		writeFile(t, target, "keep me")
		old := time.Now().Add(-time.Hour)
		require.NoError(t, os.Chtimes(target, old, old))
		path := filepath.Join(dir, "x.pid")
		symlinkOrSkip(t, target, path)
		assertRefused(t, path, "symbolic link")
		data, err := os.ReadFile(target)
		require.NoError(t, err)
		assert.Equal(t, "keep me", string(data))
		fi, err := os.Stat(target)
		require.NoError(t, err)
		assert.True(t, fi.ModTime().Equal(old))
		assertDirHas(t, dir, "precious", "x.pid")
	})
	t.Run("dangling symlink", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "x.pid")
		symlinkOrSkip(t, filepath.Join(dir, "nowhere"), path)
		assertRefused(t, path, "symbolic link")
		assertDirHas(t, dir, "x.pid")
	})
	t.Run("directory", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "x.pid")
		require.NoError(t, os.Mkdir(path, 0o755))
		fi, err := os.Lstat(path)
		require.NoError(t, err)
		// The whole mode, as the system reports it (drwxr-xr-x here,
		// drwxrwxrwx on Windows, which has no permission bits).
		assertRefused(t, path, "not a regular file (mode "+fi.Mode().String()+")")
		assertDirHas(t, dir, "x.pid")
	})
	t.Run("fifo", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "x.pid")
		if err := mkfifo(path); err != nil {
			t.Skip(err)
		}
		assertRefused(t, path, "not a regular file")
		assertDirHas(t, dir, "x.pid")
	})
	t.Run("parent is a file", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "data"), "a file")
		path := filepath.Join(dir, "data", "x.pid")
		l, err := New(path)
		require.NoError(t, err)
		err = l.TryLock()
		require.Error(t, err)
		assert.Contains(t, err.Error(), path)
		assertDirHas(t, dir, "data")
	})
}

// symlinkOrSkip makes path a symbolic link to target, or skips the test
// where links cannot be made.
func symlinkOrSkip(t *testing.T, target, path string) {
	t.Helper()
	if runtime.GOOS == "windows" {
		proctest.SkipUnderWine(t, "os.Symlink (CreateSymbolicLinkW) succeeds but makes no link that Lstat or ReadDir can see")
	}
	if err := os.Symlink(target, path); err != nil {
		if runtime.GOOS == "windows" {
			t.Skipf("this Windows account may not create symbolic links (it needs SeCreateSymbolicLinkPrivilege or developer mode): %v", err)
		}
		t.Fatal(err)
	}
}

func assertRefused(t *testing.T, path, why string) {
	t.Helper()
	l, err := New(path)
	require.NoError(t, err)
	err = l.TryLock()
	require.Error(t, err)
	assert.Contains(t, err.Error(), path)
	assert.Contains(t, err.Error(), why)
	var pe *fs.PathError
	assert.ErrorAs(t, err, &pe)
	_, err = l.Holder()
	assert.ErrorContains(t, err, why)
	_, _, err = l.Running()
	assert.ErrorContains(t, err, why)
	_, err = l.CleanStale()
	assert.ErrorContains(t, err, why)
}

func assertDirHas(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	assert.ElementsMatch(t, names, got, "files in %s", dir)
}

// The Locker's fields and constructors: New resolves the path once, the
// zero Locker locks DefaultPath resolved at its first use, an invalid Port
// is refused by TryLock with nothing written, FromEnv reads the
// environment, nil Logger is silent.
func TestLockerConfiguration(t *testing.T) {
	checkNoGoroutineLeak(t)
	for _, port := range []int{-1, 65536} {
		path := filepath.Join(t.TempDir(), "x.pid")
		l, err := New(path)
		require.NoError(t, err)
		l.Port = port
		err = l.TryLock()
		assert.ErrorContains(t, err, fmt.Sprintf("Locker.Port is %d, outside 0..65535", port))
		assert.Equal(t, err, l.Err(), "Err reports the invalid field")
		assert.NoFileExists(t, path, "nothing is written for an invalid Port")
		assert.NoError(t, l.Unlock(), "Unlock of a Locker that never held")
	}
	// A positive WatchInterval under 10 ms is refused, naming the field,
	// the value and the unit trap, by TryLock and by Lock.
	for _, d := range []time.Duration{1, 5, 9 * time.Millisecond} {
		path := filepath.Join(t.TempDir(), "x.pid")
		l, err := New(path)
		require.NoError(t, err)
		l.WatchInterval = d
		for _, acquire := range []func() error{l.TryLock, func() error { return l.Lock(context.Background()) }} {
			err = acquire()
			assert.ErrorContains(t, err, fmt.Sprintf("Locker.WatchInterval is %v: want at least 10ms", d))
			assert.ErrorContains(t, err, "a bare number is nanoseconds")
			assert.NoFileExists(t, path, "nothing is written for a too short WatchInterval")
		}
	}
	for _, d := range []time.Duration{10 * time.Millisecond, -1} {
		l, err := newWith(filepath.Join(t.TempDir(), "x.pid"), watchEvery(d))
		require.NoError(t, err)
		require.NoError(t, l.TryLock(), "WatchInterval %v", d)
		require.NoError(t, l.Unlock())
	}
	l, err := Acquire(filepath.Join(t.TempDir(), "x.pid"))
	require.NoError(t, err)
	info, _ := l.Info()
	assert.Zero(t, info.Port, "Port 0 records none")
	assert.False(t, l.log.Enabled(context.Background(), slog.LevelError), "a nil Logger is silent")
	assert.Equal(t, defaultWatchInterval, l.watch, "WatchInterval 0 is 1 s")
	require.NoError(t, l.Unlock())

	dir := t.TempDir()
	t.Chdir(dir)
	l, err = New("")
	require.NoError(t, err)
	t.Chdir(t.TempDir()) // after New: changes nothing
	assert.Equal(t, filepath.Join(dir, DefaultPath), l.Path(), "resolved once, in New")

	// The zero Locker: DefaultPath, resolved at its first use.
	t.Chdir(dir)
	zero := &Locker{WatchInterval: -1}
	require.NoError(t, zero.TryLock())
	t.Chdir(t.TempDir())
	assert.Equal(t, filepath.Join(dir, DefaultPath), zero.Path())
	assert.FileExists(t, filepath.Join(dir, DefaultPath))
	require.NoError(t, zero.Unlock())
	assert.NoFileExists(t, filepath.Join(dir, DefaultPath), "Unlock removes the file it published, whatever the working directory")

	// The first calls of a Locker may come from several goroutines at
	// once: one takes the lock, the others are told this Locker holds it.
	racy, err := New(filepath.Join(dir, "racy.pid"))
	require.NoError(t, err)
	racy.WatchInterval = -1
	errs := make(chan error, 8)
	for range 8 {
		go func() { errs <- racy.TryLock() }()
	}
	var won int
	for range 8 {
		if err := <-errs; err == nil {
			won++
		} else {
			assert.ErrorIs(t, err, ErrAlreadyHeld)
		}
	}
	assert.Equal(t, 1, won)
	require.NoError(t, racy.Unlock())

	t.Setenv(EnvPath, "")
	l, err = FromEnv(filepath.Join(dir, "given.pid"))
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(dir, "given.pid"), l.Path(), "no PID_FILE_PATH: the given path")
	assert.Nil(t, l.Logger)
	t.Setenv(EnvPath, "/tmp/from-env.pid")
	l, err = New(filepath.Join(dir, "given.pid"))
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(dir, "given.pid"), l.Path(), "the environment is read only by FromEnv")
	l, err = FromEnv("given.pid")
	require.NoError(t, err)
	fromEnv, err := filepath.Abs("/tmp/from-env.pid") // on Windows, on the working directory's drive
	require.NoError(t, err)
	assert.Equal(t, fromEnv, l.Path())
	t.Setenv(EnvDebug, "true")
	l, err = FromEnv("")
	require.NoError(t, err)
	require.NoError(t, l.setup())
	assert.True(t, l.log.Enabled(context.Background(), slog.LevelDebug), "PROCESS_MANAGER_DEBUG=true enables debug logs")
}

// WatchInterval: 0 is on (1 s, and inotify on Linux), so a removed PID
// file is written again; negative is off, so it is not.
func TestWatchIntervalZeroAndNegative(t *testing.T) {
	checkNoGoroutineLeak(t)
	lfs := newLosableFS()
	exists := func(path string) bool {
		_, err := lfs.readFile(path)
		return err == nil
	}
	path := filepath.Join(t.TempDir(), "on.pid")
	on, err := acquireWith(path, lfs.use)
	require.NoError(t, err)
	require.NoError(t, lfs.remove(path))
	deadline := time.Now().Add(10 * time.Second)
	for !exists(path) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	assert.True(t, exists(path), "with WatchInterval 0 the removed PID file was not written again")
	require.NoError(t, on.Err())
	require.NoError(t, on.Unlock())

	path = filepath.Join(t.TempDir(), "off.pid")
	off, err := acquireWith(path, lfs.use, noWatch)
	require.NoError(t, err)
	require.NoError(t, lfs.remove(path))
	time.Sleep(100 * time.Millisecond)
	assert.False(t, exists(path), "with a negative WatchInterval the PID file was written again")
	assert.NoError(t, off.Err(), "with a negative WatchInterval no loss is reported")
	require.NoError(t, off.Unlock())
}

// A reader never sees a half-written file of a live holder: while many
// Lockers take and release the lock, every read of the path either finds
// no file or a complete PID file.
func TestReadersNeverSeePartialFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.pid")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, _ := newWith(path, noWatch)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if l.TryLock() == nil {
					l.Unlock()
				}
			}
		}()
	}
	reads := 0
	for deadline := time.Now().Add(300 * time.Millisecond); time.Now().Before(deadline); {
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if len(data) == 0 && !publishByRename {
			// Windows writes the PID file in place (an open file cannot
			// be renamed over): between its creation and the write, a
			// reader sees it empty. Never a partial one.
			continue
		}
		require.NoError(t, err)
		_, err = ParseProcessLock(data)
		require.NoError(t, err, "read %q", data)
		reads++
	}
	close(stop)
	wg.Wait()
	t.Logf("%d complete reads", reads)
	assert.Positive(t, reads)
}

func TestOSProcesses(t *testing.T) {
	p := osProcesses{}
	alive, err := p.Alive(os.Getpid())
	require.NoError(t, err)
	assert.True(t, alive)
	alive, err = p.Alive(deadPID(t))
	require.NoError(t, err)
	assert.False(t, alive)
	if pid, ok := otherUsersProcess(); ok {
		alive, err = p.Alive(pid)
		require.NoError(t, err)
		assert.True(t, alive, "access denied means alive (pid %d)", pid)
	}
	for _, bad := range []int{0, -1} {
		_, err = p.Alive(bad)
		assert.Error(t, err)
		_, _, err = p.Start(bad)
		assert.Error(t, err)
		assert.Error(t, p.Signal(bad, os.Kill), "never signal pid %d", bad)
	}
	assert.Error(t, p.Signal(os.Getpid(), nil))
	assert.ErrorIs(t, p.Signal(deadPID(t), probeSignal), ErrNoProcess)

	tok, at, err := p.Start(os.Getpid())
	require.NoError(t, err)
	assert.NotEmpty(t, tok)
	assert.WithinDuration(t, time.Now(), at, 10*time.Minute)
	tok2, _, err := p.Start(os.Getpid())
	require.NoError(t, err)
	assert.Equal(t, tok, tok2, "the token is stable")
	_, _, err = p.Start(deadPID(t))
	assert.ErrorIs(t, err, ErrNoProcess)
}

// Every acquisition writes, in full, the ProcessLock that Info reports:
// the content is made from a template with the start time written over a
// placeholder, and a mistake there would show from the first acquisition
// or only from a later one.
func TestEachAcquisitionWritesWhatInfoSays(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.pid")
	l, err := New(path)
	require.NoError(t, err)
	l.Port = 3000
	for i := range 3 {
		require.NoError(t, l.TryLock(), "acquisition %d", i)
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		got, err := ParseProcessLock(data)
		require.NoError(t, err, "acquisition %d: %q", i, data)
		want, ok := l.Info()
		require.True(t, ok)
		assert.True(t, want.Equal(got), "acquisition %d: file %+v, Info %+v", i, got, want)
		assert.Equal(t, 3000, got.Port)
		require.NoError(t, l.Unlock())
		time.Sleep(2 * time.Millisecond) // another start time
	}
}
