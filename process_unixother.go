//go:build unix && !linux && !darwin

package instancelock

import (
	"errors"
	"fmt"
	"time"
)

// processStart: this system offers no portable start time here; staleness
// is then judged by the kernel lock and signal 0 alone.
func processStart(pid int) (string, time.Time, error) {
	return "", time.Time{}, fmt.Errorf("start time of pid %d: %w", pid, errors.ErrUnsupported)
}

// zombie: not detected on this system; a zombie counts as alive until its
// parent reaps it.
func zombie(int) bool { return false }
