package instancelock

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock/internal/proctest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func init() { helpers["layout-xsquat"] = helperLayoutXSquat }

// helperLayoutXSquat does what any user who can only read $PIDFILE can:
// it opens it read-only and takes an exclusive flock (Linux allows
// LOCK_EX on a read-only descriptor), says "squatting" and keeps it until
// stdin closes. It binds no name.
func helperLayoutXSquat() {
	f, err := os.Open(os.Getenv("PIDFILE"))
	if err == nil {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	}
	if err != nil {
		fmt.Println("error", err)
		return
	}
	fmt.Println("squatting")
	io.Copy(io.Discard, os.Stdin)
	f.Close()
}

// A user who can only read the PID file takes an exclusive flock on the
// stale file (after a crash) or on the emptied one (in-place layout, after
// a clean stop). A start that holds the lock's names (root, which can
// read the squatter's network namespace) is refused with an error that
// matches ErrWouldBlock, not ErrAlreadyRunning, and names the squatter's
// pid and uid; Running and Terminate say the same and signal nothing. A
// start that cannot check the squatter (the service user) is refused as
// already running, as before, but never names itself or the dead pid: it
// names the flock's owner. Once the squatter leaves, the service starts.
func TestAnExclusiveFlockOfAReaderBlocksHonestly(t *testing.T) {
	requireRoot(t, "setpriv")
	for _, layout := range []string{"service directory, crash", "prepared file, clean stop"} {
		t.Run(layout, func(t *testing.T) {
			dir := filepath.Join(sharedDir(t), "data")
			require.NoError(t, os.Mkdir(dir, 0o755))
			path := filepath.Join(dir, "app.pid")
			service := asNobody(t, "layout-lock", "PIDFILE="+path)
			dead := 0
			if layout == "service directory, crash" {
				require.NoError(t, os.Chown(dir, 65534, 65534))
				_, out := proctest.Start(t, service)
				require.Equal(t, "locked", out.Next(20*time.Second))
				dead = service.Process.Pid
				require.NoError(t, service.Process.Kill())
				service.Wait()
				require.NotEmpty(t, mustReadFile(t, path))
			} else {
				writeFile(t, path, "")
				require.NoError(t, os.Chown(path, 65534, 65534))
				in, out := proctest.Start(t, service)
				require.Equal(t, "locked", out.Next(20*time.Second))
				in.(io.Closer).Close()
				service.Wait()
				require.Empty(t, mustReadFile(t, path))
			}
			require.NoError(t, os.Chmod(path, 0o644)) // readable by uid 1234
			squatter := asUID(t, 1234, "layout-xsquat", "PIDFILE="+path)
			sin, sout := proctest.Start(t, squatter)
			require.Equal(t, "squatting", sout.Next(20*time.Second))
			spid := strconv.Itoa(squatter.Process.Pid)

			// The service user's start: it cannot read uid 1234's
			// namespaces, so the writer may be an instance; but it names
			// the flock's owner, not itself, not the dead pid.
			contender := asNobody(t, "layout-lock", "PIDFILE="+path)
			_, out := proctest.Start(t, contender)
			line := out.Next(20 * time.Second)
			require.True(t, strings.HasPrefix(line, "error "), line)
			assert.NotContains(t, line, "pid "+strconv.Itoa(contender.Process.Pid)+",", "names itself")
			assert.NotContains(t, line, "pid "+strconv.Itoa(contender.Process.Pid)+" ", "names itself")
			if dead != 0 {
				assert.NotContains(t, line, "pid "+strconv.Itoa(dead)+",", "names the dead pid")
			}
			if layout == "service directory, crash" {
				assert.Contains(t, line, "already running: pid "+spid+",")
			}

			// Root's start holds the names and can check the squatter.
			l, err := New(path)
			require.NoError(t, err)
			err = l.TryLock()
			require.ErrorIs(t, err, ErrWouldBlock)
			require.NotErrorIs(t, err, ErrAlreadyRunning)
			msg := err.Error()
			assert.Contains(t, msg, "no instance holds the lock")
			assert.Contains(t, msg, "pid "+spid+" (uid 1234), which is not an instance")
			assert.Contains(t, msg, "0600")
			assert.NotContains(t, msg, "pid "+strconv.Itoa(os.Getpid()))
			assert.Equal(t, 1, strings.Count(msg, path), msg)
			assert.NotContains(t, msg, "\n")

			_, running, rerr := l.Running()
			require.ErrorIs(t, rerr, ErrWouldBlock, "Running says what TryLock says")
			assert.False(t, running)
			assert.Equal(t, msg, rerr.Error())
			terr := l.Terminate(nil)
			require.ErrorIs(t, terr, ErrWouldBlock)
			assert.Contains(t, terr.Error(), "pid "+spid+" (uid 1234)")

			// Nothing was signalled: the squatter leaves when told, with
			// exit status 0.
			require.NoError(t, squatter.Process.Signal(unix.Signal(0)))
			sin.(io.Closer).Close()
			require.NoError(t, squatter.Wait())

			_, out = proctest.Start(t, asNobody(t, "layout-lock", "PIDFILE="+path))
			require.Equal(t, "locked", out.Next(20*time.Second))
		})
	}
}

// A start never names its own process as the running instance: with an
// exclusive flock held by another process of this user on a stale file,
// the error names the flock's owner (as the kernel shows it), and the
// names this start holds are never taken for a holder's.
func TestAStartNeverNamesItself(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.pid")
	writeFile(t, path, fmt.Sprintf("%d\n", deadPID(t)))
	cmd := helperCmd(t, "layout-xsquat", "PIDFILE="+path)
	in, out := proctest.Start(t, cmd)
	require.Equal(t, "squatting", out.Next(20*time.Second))
	defer in.(io.Closer).Close()
	l, err := New(path)
	require.NoError(t, err)
	err = l.TryLock()
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "pid "+strconv.Itoa(os.Getpid())+",")
	assert.Contains(t, err.Error(), "pid "+strconv.Itoa(cmd.Process.Pid))

	// A name this process listens on is never taken for a holder's.
	fd, err := bindName(l.name)
	require.NoError(t, err)
	defer closeName(fd)
	_, ok := l.namePeer()
	assert.False(t, ok, "namePeer named this process")
	_, _, err = l.Running()
	if err != nil {
		assert.NotContains(t, err.Error(), "pid "+strconv.Itoa(os.Getpid())+",")
	}
}
