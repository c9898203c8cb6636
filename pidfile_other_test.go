//go:build !unix && !windows

package instancelock

import (
	"errors"
	"os"
	"testing"
)

// These systems have no kernel file lock the Locker can use: the tests
// with real files fail there by design and are not meant to run.

var probeSignal = os.Kill

func assertCreatedModes(t *testing.T, _ string) { t.Skip("no file modes to check on this system") }

func assertTerminated(t *testing.T, _ error) { t.Skip("no termination status to check on this system") }

func mkfifo(string) error { return errors.ErrUnsupported }

func otherUsersProcess() (int, bool) { return 0, false }

// runTestService does nothing: only Windows has services.
func runTestService() {}
