//go:build !unix && !windows

package instancelock

import (
	"errors"
	"fmt"
	"os"
	"time"
)

func processAlive(pid int) (bool, error) {
	return false, fmt.Errorf("liveness of pid %d: %w", pid, errors.ErrUnsupported)
}

func processStart(pid int) (string, time.Time, error) {
	return "", time.Time{}, fmt.Errorf("start time of pid %d: %w", pid, errors.ErrUnsupported)
}

func processSignal(pid int, sig os.Signal) error {
	return fmt.Errorf("signal %v to pid %d: %w", sig, pid, errors.ErrUnsupported)
}

var defaultSignal = os.Kill
