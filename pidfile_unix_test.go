//go:build unix

package instancelock

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// probeSignal tests for a process without touching it.
var probeSignal os.Signal = syscall.Signal(0)

// assertCreatedModes checks the modes of a PID file TryLock created, and of
// its directory: 0644 and 0755 less the umask.
func assertCreatedModes(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o644), fi.Mode().Perm()&^umask())
	di, err := os.Stat(filepath.Dir(path))
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o755), di.Mode().Perm()&^umask())
}

func umask() fs.FileMode {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return fs.FileMode(m)
}

// assertTerminated checks the Wait error of a holder stopped by
// Terminate(nil): it died of SIGTERM.
func assertTerminated(t *testing.T, err error) {
	t.Helper()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, syscall.SIGTERM, ee.Sys().(syscall.WaitStatus).Signal())
}

func mkfifo(path string) error { return syscall.Mkfifo(path, 0o644) }

// otherUsersProcess returns a process of another user (init), when this
// test does not run as root.
func otherUsersProcess() (int, bool) { return 1, os.Getuid() != 0 }

// runTestService does nothing: only Windows has services.
func runTestService() {}
