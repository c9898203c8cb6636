//go:build !unix

package instancelock

import (
	"os/exec"
	"testing"
)

// errorCasesOS: permissions and a removed working directory are Unix's.
func errorCasesOS() []errorCase { return nil }

func sharedTempDir(t *testing.T) string { return t.TempDir() }

func asNobodyOrFail(t *testing.T, _ string, _ ...string) *exec.Cmd {
	t.Fatal("no user nobody here")
	return nil
}
