//go:build linux

package instancelock

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock/internal/proctest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// flockWriters lists the pids /proc/locks names as holding the exclusive
// flock of the file at path.
func flockWriters(t *testing.T, path string) []int {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	w, _, err := flockOwners(fi)
	require.NoError(t, err)
	return w
}

// In the in-place layout (a root-owned directory, the PID file made for
// the service user, no temporary file possible), another user holding a
// shared flock on the file (a reader) neither blocks a start nor leaves
// the new holder without the file's kernel lock for longer than it reads:
// the start succeeds (never "PID: unknown"), a third start is refused
// naming the second, and once the reader leaves the holder takes the
// file's exclusive flock by itself. Both a killed holder's file (its JSON)
// and a cleanly stopped one's (emptied) are tried, several rounds.
func TestInPlaceReaderNeitherBlocksNorUnlocks(t *testing.T) {
	requireRoot(t, "setpriv", "flock")
	dir := filepath.Join(sharedDir(t), "run-app")
	require.NoError(t, os.Mkdir(dir, 0o755))
	path := filepath.Join(dir, "app.pid")
	require.NoError(t, os.WriteFile(path, nil, 0o644))
	require.NoError(t, os.Chown(path, 65534, 65534))

	prev := asNobody(t, "layout-lock", "PIDFILE="+path)
	pin, pout := proctest.Start(t, prev)
	require.Equal(t, "locked", pout.Next(20*time.Second))
	rounds := 6
	if testing.Short() {
		rounds = 2
	}
	for r := range rounds {
		killed := r%2 == 0
		if killed {
			require.NoError(t, prev.Process.Kill()) // leaves its JSON
		} else {
			pin.(interface{ Close() error }).Close() // unlocks: the file is emptied
		}
		prev.Wait()
		// The reader is another user (daemon, uid 1) who can read the file.
		rd := exec.Command("setpriv", "--reuid=1", "--regid=1", "--clear-groups", "sh", "-c",
			`exec 3<"$1"; flock -s 3; echo reading; read x; exec 3<&-`, "sh", path)
		rin, err := rd.StdinPipe()
		require.NoError(t, err)
		rout := proctest.NewLines(t, rd)
		require.NoError(t, rd.Start())
		t.Cleanup(func() { rd.Process.Kill(); rd.Wait() })
		require.Equal(t, "reading", rout.Next(20*time.Second))

		next := asNobody(t, "layout-lock", "PIDFILE="+path)
		nin, nout := proctest.Start(t, next)
		require.Equal(t, "locked", nout.Next(20*time.Second), "round %d (killed %v): a reader kept the service down", r, killed)
		h, err := ParseProcessLock(mustReadFile(t, path))
		require.NoError(t, err)
		assert.Equal(t, next.Process.Pid, h.PID, "round %d", r)

		// A third start is refused, naming the second.
		_, out3 := proctest.Start(t, asNobody(t, "layout-lock", "PIDFILE="+path))
		line := out3.Next(20 * time.Second)
		assert.Contains(t, line, "already running", "round %d", r)
		assert.NotContains(t, line, "unknown", "round %d", r)
		assert.Contains(t, line, "pid "+strconv.Itoa(next.Process.Pid)+" ", "round %d", r)

		// Readers see it as the holder, proven by its name and its file.
		l, err := newWith(path)
		require.NoError(t, err)
		s, err := l.look()
		require.NoError(t, err)
		assert.True(t, s.held && s.proven && s.holder.PID == next.Process.Pid, "round %d: %+v", r, s)

		// The reader leaves: the holder takes the file's lock by itself.
		rin.Close()
		require.NoError(t, rd.Wait())
		deadline := time.Now().Add(30 * time.Second)
		for !slices.Contains(flockWriters(t, path), next.Process.Pid) {
			if line, err := nout.Line(10 * time.Millisecond); err == nil {
				t.Fatalf("round %d: %s", r, line)
			}
			require.True(t, time.Now().Before(deadline), "round %d: the holder did not take the file's flock after the reader left", r)
		}
		prev, pin = next, nin
	}
}
