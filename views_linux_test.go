//go:build linux

package instancelock

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock/internal/proctest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func init() {
	helpers["mntns-holder"] = helperMntnsHolder
	helpers["rm-contender"] = helperRmContender
}

// helperMntnsHolder runs in a mount namespace of its own (the test starts
// it with CLONE_NEWNS): it mounts a tmpfs of its own over the directory of
// $PIDFILE, so that the same path names another file than for the test,
// as in another container sharing the network namespace; it takes the lock
// there, prints "locked", and holds it until stdin closes.
func helperMntnsHolder() {
	path := os.Getenv("PIDFILE")
	if err := unix.Mount("tmpfs", filepath.Dir(path), "tmpfs", 0, "size=1m"); err != nil {
		fmt.Println("error", err)
		return
	}
	l, err := Acquire(path)
	if err != nil {
		fmt.Println("error", err)
		return
	}
	fmt.Println("locked")
	bufio.NewScanner(os.Stdin).Scan()
	l.Unlock()
}

// Two processes that share the network namespace (so the lock's abstract
// name) but not the file system (the containers of a Kubernetes pod, a
// container with host networking) have different files at the same path:
// neither is refused, reported or signalled because of the other.
func TestNamesOfAnotherFileSystemViewAreIgnored(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "x.pid")
	holder := helperCmd(t, "mntns-holder", "PIDFILE="+path)
	holder.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	_, out := proctest.Start(t, holder)
	require.Equal(t, "locked", out.Next(20*time.Second))

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, entries, "the holder's file is in its own tmpfs, not here")

	l, err := New(path)
	require.NoError(t, err)
	_, running, err := l.Running()
	require.NoError(t, err)
	assert.False(t, running, "the other view's holder is not this path's holder")
	assert.ErrorIs(t, l.Terminate(syscall.SIGTERM), ErrNotRunning, "nothing is signalled")
	require.NoError(t, l.TryLock(), "this path's file is free")
	_, err = os.Stat(path)
	require.NoError(t, err)
	require.NoError(t, l.Unlock())
	require.NoError(t, holder.Process.Signal(syscall.Signal(0)), "the other holder still runs")
}

// helperRmContender takes the lock at $PIDFILE once per line on stdin:
// it removes the file first (as a tmp cleaner would, at the worst moment),
// then tries, and prints "won" or "refused".
func helperRmContender() {
	path := os.Getenv("PIDFILE")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		l, err := New(path)
		if err == nil {
			l.WatchInterval = -1
			os.Remove(path)
			err = l.TryLock()
		}
		switch {
		case err == nil:
			l.Unlock()
			fmt.Println("won")
		case errors.Is(err, ErrAlreadyRunning):
			fmt.Println("refused")
		default:
			fmt.Println("error", err)
		}
	}
}

// Connections made to the lock's abstract name to fill its backlog (any
// user may connect to an abstract name) do not hide the holder: a
// contender that finds the backlog full waits for room, or finds the
// listener in /proc, and is refused, even when the PID file was just
// removed.
func TestAFullBacklogDoesNotHideTheHolder(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.pid")
	holder := helperCmd(t, "symlink-holder", "PIDFILE="+path, "WATCH=1h", "REPUBLISH=1")
	_, hout := proctest.Start(t, holder)
	require.Contains(t, hout.Next(20*time.Second), "locked")
	l, err := New(path)
	require.NoError(t, err)
	require.NoError(t, l.setup())

	// Flood: connect and close as fast as possible.
	var stop atomic.Bool
	var full atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
				if err != nil {
					continue
				}
				if unix.Connect(fd, &unix.SockaddrUnix{Name: l.name}) == unix.EAGAIN {
					full.Add(1)
				}
				unix.Close(fd)
			}
		}()
	}
	defer func() { stop.Store(true); wg.Wait() }()

	c := helperCmd(t, "rm-contender", "PIDFILE="+path)
	cin, cout := proctest.Start(t, c)
	for r := range 100 {
		fmt.Fprintln(cin, "go")
		require.Equal(t, "refused", cout.Next(20*time.Second), "round %d: a second instance started while the holder lives", r)
		if r%10 == 0 {
			// The holder puts its file back; give it the time.
			time.Sleep(5 * time.Millisecond)
		}
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("connects refused for a full backlog during the rounds: %d", full.Load())
}

// A stopped holder drains nothing: once its backlog is full, a contender
// still finds it (in /proc) and is refused.
func TestAStoppedHolderWithAFullBacklogIsStillFound(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.pid")
	holder := helperCmd(t, "symlink-holder", "PIDFILE="+path, "WATCH=1h", "REPUBLISH=1")
	_, hout := proctest.Start(t, holder)
	require.Contains(t, hout.Next(20*time.Second), "locked")
	l, err := New(path)
	require.NoError(t, err)
	require.NoError(t, l.setup())
	require.NoError(t, holder.Process.Signal(syscall.SIGSTOP))
	defer holder.Process.Signal(syscall.SIGCONT)
	// Fill the backlog.
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		require.NoError(t, err)
		if err := unix.Connect(fd, &unix.SockaddrUnix{Name: l.name}); err != nil {
			unix.Close(fd)
			require.Equal(t, unix.EAGAIN, err)
			break
		}
		fds = append(fds, fd)
		require.Less(t, len(fds), 1<<16)
	}
	require.NoError(t, os.Remove(path))
	err = l.TryLock()
	var are *AlreadyRunningError
	require.ErrorAs(t, err, &are, "the holder, stopped behind a full backlog, is still the holder")
	assert.Equal(t, holder.Process.Pid, are.Holder.PID)
}

// A contender of another user than the holder's (which, unless it is root,
// may not read the holder's namespaces in /proc) still counts the holder's
// name: after an rm of the file it is refused, every time.
func TestAnotherUsersContenderCountsTheName(t *testing.T) {
	requireRoot(t, "setpriv")
	dir := sharedDir(t)
	require.NoError(t, os.Chmod(dir, 0o777)) // nobody may remove the file
	path := filepath.Join(dir, "x.pid")
	holder := helperCmd(t, "symlink-holder", "PIDFILE="+path, "WATCH=1h", "REPUBLISH=1")
	_, hout := proctest.Start(t, holder)
	require.Contains(t, hout.Next(20*time.Second), "locked")

	c := asNobody(t, "rm-contender", "PIDFILE="+path)
	cin, cout := proctest.Start(t, c)
	for r := range 50 {
		fmt.Fprintln(cin, "go")
		require.Equal(t, "refused", cout.Next(20*time.Second), "round %d: a second instance started after rm while the holder lives", r)
	}
}

func init() { helpers["churn-once"] = helperChurnOnce }

// helperChurnOnce takes the lock at $PIDFILE once if it can: it appends
// "enter"/"exit" to $LEDGER around a tenure of up to 2 ms, and exits.
func helperChurnOnce() {
	l, err := New(os.Getenv("PIDFILE"))
	if err != nil {
		return
	}
	l.WatchInterval = -1
	if l.TryLock() != nil {
		return
	}
	ledger := ledgerAppend(os.Getenv("LEDGER"))
	ledger("enter")
	time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
	ledger("exit")
	l.Unlock()
}

// Many short-lived processes take the lock once each, eight at a time,
// while another removes the PID file in a loop: the names keep every
// tenure apart, including when a contender looks at a holder that is just
// exiting (its /proc entries are going away).
func TestChurningStartsAndRmNeverOverlap(t *testing.T) {
	procs := 600
	if testing.Short() {
		procs = 150
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "x.pid")
	ledger := filepath.Join(dir, "ledger")
	require.NoError(t, os.WriteFile(ledger, nil, 0o644))
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			os.Remove(path)
			time.Sleep(200 * time.Microsecond)
		}
	}()
	sem := make(chan struct{}, 8)
	var run sync.WaitGroup
	for range procs {
		sem <- struct{}{}
		run.Add(1)
		go func() {
			defer run.Done()
			defer func() { <-sem }()
			cmd := helperCmd(t, "churn-once", "PIDFILE="+path, "LEDGER="+ledger)
			if err := cmd.Run(); err != nil {
				t.Error(err)
			}
		}()
	}
	run.Wait()
	stop.Store(true)
	wg.Wait()
	n := checkTenures(t, ledger)
	t.Logf("%d tenures of %d starts, none overlapping", n, procs)
	assert.Positive(t, n)
}
