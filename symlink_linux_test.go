//go:build linux

package instancelock

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock/internal/proctest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func init() {
	helpers["symlink-holder"] = helperSymlinkHolder
	helpers["name-squatter"] = helperNameSquatter
}

// helperNameSquatter binds and listens on the lock's name for $PIDFILE,
// as a holder would, but has no PID file and no flock; it prints "bound"
// and waits for stdin to close.
func helperNameSquatter() {
	l, err := newWith(os.Getenv("PIDFILE"))
	if err != nil {
		fmt.Println("error", err)
		return
	}
	fd, err := bindName(l.name)
	if err != nil {
		fmt.Println("error", err)
		return
	}
	defer closeName(fd)
	fmt.Println("bound")
	bufio.NewScanner(os.Stdin).Scan()
}

// helperSymlinkHolder takes the lock at $PIDFILE with the periodic check
// every $WATCH and $REPUBLISH, prints "locked <pid>", then "lost <error>"
// when Lost is closed, and on "unlock" on stdin releases and prints
// "unlocked".
func helperSymlinkHolder() {
	watch, _ := time.ParseDuration(os.Getenv("WATCH"))
	l, err := newWith(os.Getenv("PIDFILE"), watchEvery(watch), func(l *Locker) { l.DisableRepublish = os.Getenv("REPUBLISH") == "0" })
	if err == nil {
		err = l.TryLock()
	}
	if err != nil {
		fmt.Println("error", strings.ReplaceAll(err.Error(), "\n", " "))
		return
	}
	fmt.Println("locked", os.Getpid())
	go func() {
		<-l.Lost()
		fmt.Println("lost", strings.ReplaceAll(l.Err().Error(), "\n", " "))
	}()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() == "unlock" {
			l.Unlock()
			fmt.Println("unlocked")
			return
		}
	}
}

// swapLink points the symbolic link at link to target atomically, as a
// deploy's "ln -sfn release current" does.
func swapLink(t *testing.T, target, link string) {
	t.Helper()
	tmp := link + ".new"
	os.Remove(tmp)
	require.NoError(t, os.Symlink(target, tmp))
	require.NoError(t, os.Rename(tmp, link))
}

// The PID file's directory does not exist yet and lies under a symbolic
// link (./data/backend.pid run from a symlinked release directory): the
// holder creates it. Paused (SIGSTOP) with its file removed, a second
// instance started by the same path, or by the resolved path, is refused
// every round: one file, one lock, whatever the spelling.
func TestNeverTwoWhenTheDirectoryIsCreatedUnderASymlink(t *testing.T) {
	rounds := 30
	if testing.Short() {
		rounds = 5
	}
	base := t.TempDir()
	release := filepath.Join(base, "releases", "5")
	require.NoError(t, os.MkdirAll(release, 0o755))
	current := filepath.Join(base, "current")
	require.NoError(t, os.Symlink(filepath.Join("releases", "5"), current))
	path := filepath.Join(current, "data", "backend.pid")
	real := filepath.Join(release, "data", "backend.pid")
	ledger := filepath.Join(base, "ledger")
	require.NoError(t, os.WriteFile(ledger, nil, 0o644))

	same := helperCmd(t, "nevertwo-contender", "PIDFILE="+path, "LEDGER="+ledger)
	sin, sout := proctest.Start(t, same)
	resolved := helperCmd(t, "nevertwo-contender", "PIDFILE="+real, "LEDGER="+ledger)
	rin, rout := proctest.Start(t, resolved)

	for r := range rounds {
		require.NoError(t, os.RemoveAll(filepath.Join(release, "data")))
		holder := helperCmd(t, "symlink-holder", "PIDFILE="+path, "WATCH=1h", "REPUBLISH=1")
		hin, hout := proctest.Start(t, holder)
		line := hout.Next(30 * time.Second)
		require.True(t, strings.HasPrefix(line, "locked "), "round %d: %s", r, line)
		hpid := holder.Process.Pid
		require.NoError(t, holder.Process.Signal(syscall.SIGSTOP))
		require.NoError(t, os.Remove(real), "round %d: the holder's file is at the resolved path", r)

		fmt.Fprintf(sin, "go %d\n", r)
		require.Equal(t, fmt.Sprintf("lost %d %d", r, hpid), sout.Next(30*time.Second),
			"round %d: a second instance by the same path was not refused", r)
		fmt.Fprintf(rin, "go %d\n", r)
		require.Equal(t, fmt.Sprintf("lost %d %d", r, hpid), rout.Next(30*time.Second),
			"round %d: a second instance by the resolved path was not refused", r)

		require.NoError(t, holder.Process.Signal(syscall.SIGCONT))
		if r%2 == 1 {
			fmt.Fprintln(hin, "unlock")
			require.Equal(t, "unlocked", hout.Next(30*time.Second))
		} else {
			holder.Process.Kill()
		}
		holder.Wait()
		// Gone: both spellings acquire at once.
		fmt.Fprintf(sin, "go %d\n", r)
		require.Equal(t, fmt.Sprintf("won %d", r), sout.Next(30*time.Second), "round %d: the next start after the holder left", r)
		fmt.Fprintf(rin, "go %d\n", r)
		require.Equal(t, fmt.Sprintf("won %d", r), rout.Next(30*time.Second), "round %d: the next start by the resolved path", r)
		os.Remove(real)
	}
	assert.Equal(t, 2*rounds, checkTenures(t, ledger))
}

// A symbolic link in the PID file's path is swapped to another directory
// while the holder lives (paused, then running): a second instance started
// by the same path is refused, and the holder, at its next check,
// re-publishes its file where the path now leads (republishing is on by default) and then
// also refuses a start by that directory's real path, or, without
// re-publishing, reports the lock lost.
func TestNeverTwoWhenASymlinkedDirectoryIsSwapped(t *testing.T) {
	rounds := 20
	if testing.Short() {
		rounds = 4
	}
	for _, republish := range []bool{true, false} {
		t.Run(fmt.Sprintf("republish=%v", republish), func(t *testing.T) {
			base := t.TempDir()
			dirs := []string{filepath.Join(base, "A"), filepath.Join(base, "B")}
			for _, d := range dirs {
				require.NoError(t, os.Mkdir(d, 0o755))
			}
			cur := filepath.Join(base, "cur")
			require.NoError(t, os.Symlink("A", cur))
			path := filepath.Join(cur, "b.pid")
			ledger := filepath.Join(base, "ledger")
			require.NoError(t, os.WriteFile(ledger, nil, 0o644))
			rep := "1"
			if !republish {
				rep = "0"
			}
			same := helperCmd(t, "nevertwo-contender", "PIDFILE="+path, "LEDGER="+ledger)
			sin, sout := proctest.Start(t, same)

			for r := range rounds {
				from, to := dirs[r%2], dirs[(r+1)%2]
				holder := helperCmd(t, "symlink-holder", "PIDFILE="+path, "WATCH=20ms", "REPUBLISH="+rep)
				hin, hout := proctest.Start(t, holder)
				line := hout.Next(30 * time.Second)
				require.True(t, strings.HasPrefix(line, "locked "), "round %d: %s", r, line)
				hpid := holder.Process.Pid
				_, err := os.Stat(filepath.Join(from, "b.pid"))
				require.NoError(t, err, "round %d: the holder's file", r)

				paused := r%2 == 0
				if paused {
					require.NoError(t, holder.Process.Signal(syscall.SIGSTOP))
				}
				swapLink(t, filepath.Base(to), cur)
				fmt.Fprintf(sin, "go %d\n", r)
				require.Equal(t, fmt.Sprintf("lost %d %d", r, hpid), sout.Next(30*time.Second),
					"round %d (paused %v): a second instance by the same path was not refused after the swap", r, paused)
				if paused {
					require.NoError(t, holder.Process.Signal(syscall.SIGCONT))
				}

				if republish {
					// The holder follows the path to its new directory.
					for {
						if data, err := os.ReadFile(filepath.Join(to, "b.pid")); err == nil {
							if pl, err := ParseProcessLock(data); err == nil && pl.PID == hpid {
								break
							}
						}
						if line, err := hout.Line(time.Millisecond); err == nil {
							t.Fatalf("round %d: the holder did not re-publish: %s", r, line)
						}
					}
					// Now the new directory's real path is its lock too.
					real := helperCmd(t, "nevertwo-contender", "PIDFILE="+filepath.Join(to, "b.pid"), "LEDGER="+ledger)
					rin, rout := proctest.Start(t, real)
					fmt.Fprintf(rin, "go %d\n", r)
					require.Equal(t, fmt.Sprintf("lost %d %d", r, hpid), rout.Next(30*time.Second),
						"round %d: a second instance by the new real path was not refused", r)
					fmt.Fprintln(hin, "unlock")
					require.Equal(t, "unlocked", hout.Next(30*time.Second))
				} else {
					line := hout.Next(30 * time.Second)
					require.True(t, strings.HasPrefix(line, "lost "), "round %d: %s", r, line)
					assert.Contains(t, line, "symbolic link", "round %d", r)
					holder.Process.Kill()
				}
				holder.Wait()
				fmt.Fprintf(sin, "go %d\n", r)
				require.Equal(t, fmt.Sprintf("won %d", r), sout.Next(30*time.Second), "round %d: the next start after the holder left", r)
				for _, d := range dirs {
					os.Remove(filepath.Join(d, "b.pid"))
				}
			}
			checkTenures(t, ledger)
		})
	}
}

// A process of our own user that only listens on the lock's name (no PID
// file, no flock) is not proven to hold the lock: Terminate (and so
// "instancelock stop") signals nothing, and a refused start prints no kill
// lines. A real holder whose file was removed is still proven (it holds
// the flock of the removed file) and is signalled.
func TestTheNameAloneProvesNoHolder(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "b.pid")
	for r := range 5 {
		sq := helperCmd(t, "name-squatter", "PIDFILE="+path)
		qin, qout := proctest.Start(t, sq)
		require.Equal(t, "bound", qout.Next(30*time.Second))

		l, err := New(path)
		require.NoError(t, err)
		err = l.Terminate(syscall.SIGTERM)
		require.Error(t, err, "round %d: the squatter was signalled", r)
		var refused *AlreadyRunningError
		require.ErrorAs(t, err, &refused, "round %d: a holder that is not proven", r)
		assert.False(t, refused.Proven, "round %d", r)
		require.NoError(t, sq.Process.Signal(syscall.Signal(0)), "round %d: the squatter is alive", r)
		var are *AlreadyRunningError
		require.ErrorAs(t, l.TryLock(), &are, "round %d: the name is held by our user: refused", r)
		assert.False(t, are.Proven, "round %d: %+v", r, are)
		assert.NotContains(t, are.Help("restart"), "kill ", "round %d", r)
		qin.(interface{ Close() error }).Close()
		require.NoError(t, sq.Wait())

		// The real holder, its file removed: proven by its flock.
		holder := helperCmd(t, "symlink-holder", "PIDFILE="+path, "WATCH=1h", "REPUBLISH=0")
		_, hout := proctest.Start(t, holder)
		line := hout.Next(30 * time.Second)
		require.True(t, strings.HasPrefix(line, "locked "), "round %d: %s", r, line)
		require.NoError(t, os.Remove(path))
		hout.Expect("lost ", 30*time.Second)
		require.NoError(t, l.Terminate(syscall.SIGTERM), "round %d: the real holder", r)
		err = holder.Wait()
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, "round %d", r)
		assert.Equal(t, syscall.SIGTERM, ee.Sys().(syscall.WaitStatus).Signal(), "round %d", r)
	}
}
