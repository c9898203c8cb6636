//go:build windows

package instancelock

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// probeSignal: Windows has no signal 0, only os.Kill.
var probeSignal = os.Kill

// assertCreatedModes checks the modes of a PID file TryLock created, and of
// its directory: Windows keeps no Unix permission bits, only the read-only
// attribute, which must not be set.
func assertCreatedModes(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.True(t, fi.Mode().IsRegular())
	assert.NotZero(t, fi.Mode().Perm()&0o200, "the PID file is not read-only")
	di, err := os.Stat(filepath.Dir(path))
	require.NoError(t, err)
	assert.True(t, di.IsDir())
}

// assertTerminated checks the Wait error of a holder stopped by
// Terminate(nil): TerminateProcess with exit code 1.
func assertTerminated(t *testing.T, err error) {
	t.Helper()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, 1, ee.ExitCode())
}

func mkfifo(string) error {
	return errors.New("Windows has no FIFOs (named pipes live in \\\\.\\pipe\\, not in directories)")
}

// otherUsersProcess: a test process cannot name another user's process on
// every Windows machine (and Wine runs everything as one user).
func otherUsersProcess() (int, bool) { return 0, false }
