//go:build unix

package instancelock

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// errorCasesOS are the error paths that need Unix: permissions (as the
// user nobody when the test runs as root) and a removed working directory.
func errorCasesOS() []errorCase {
	readOnlyDir := func(t *testing.T, path string) { require.NoError(t, os.Chmod(filepath.Dir(path), 0o555)) }
	perm := []string{"fs.ErrPermission", "*fs.PathError"}
	cases := []errorCase{
		{name: "TryLock/a directory this user cannot write, no PID file", setup: readOnlyDir, op: "TryLock", unprivileged: true,
			matches: perm, says: "create the PID file for it beforehand"},
		{name: "Holder/a file this user cannot read", setup: func(t *testing.T, path string) {
			writeFile(t, path, lockJSON(t, ProcessLock{PID: 12}))
			require.NoError(t, os.Chmod(path, 0o600))
		}, op: "Holder", unprivileged: true, matches: perm, says: "permission denied"},
		{name: "CleanStale/a stale file in a directory this user cannot write", setup: func(t *testing.T, path string) {
			host, _ := os.Hostname()
			writeFile(t, path, lockJSON(t, ProcessLock{PID: deadPID(t), Hostname: host}))
			require.NoError(t, os.Chmod(path, 0o644))
			readOnlyDir(t, path)
		}, op: "CleanStale", unprivileged: true, matches: perm, says: "remove"},
		{name: "Unlock/the directory became read-only", setup: func(t *testing.T, path string) {
			if isRoot() {
				// nobody makes the directory read-only: it must own it.
				require.NoError(t, os.Chown(filepath.Dir(path), 65534, 65534))
			}
		}, op: "Unlock", unprivileged: true, matches: perm, says: "remove"},
	}
	if runtime.GOOS == "linux" { // getcwd(2) fails with ENOENT there
		cases = append(cases, errorCase{name: "New/in a removed working directory, a relative path", op: "New in a removed working directory", inHelper: true,
			names: "app.pid", matches: []string{"fs.ErrNotExist", "*fs.PathError"}, says: "give an absolute path"})
	}
	return cases
}

// sharedTempDir is a temporary directory that the user nobody can enter.
func sharedTempDir(t *testing.T) string { return sharedDir(t) }

// asNobodyOrFail is asNobody, after requireRoot's check.
func asNobodyOrFail(t *testing.T, name string, env ...string) *exec.Cmd {
	t.Helper()
	requireRoot(t, "setpriv")
	return asNobody(t, name, env...)
}
