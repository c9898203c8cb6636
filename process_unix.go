//go:build unix

package instancelock

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// processAlive probes pid with signal 0. Only ESRCH means dead: EPERM is a
// live process of another user. A zombie counts as dead.
func processAlive(pid int) (bool, error) {
	err := unix.Kill(pid, 0)
	switch {
	case err == nil, errors.Is(err, unix.EPERM):
		// A zombie (dead, not yet reaped by its parent) still answers
		// signal 0, but it holds no files and runs nothing.
		return !zombie(pid), nil
	case errors.Is(err, unix.ESRCH):
		return false, nil
	}
	return false, fmt.Errorf("kill(%d, 0): %w", pid, err)
}

func processSignal(pid int, sig os.Signal) error {
	s, ok := sig.(syscall.Signal)
	if !ok {
		return fmt.Errorf("instancelock: signal %v is not a syscall.Signal", sig)
	}
	err := unix.Kill(pid, s)
	if errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal %v to pid %d: %w", sig, pid, ErrNoProcess)
	}
	if err != nil {
		return fmt.Errorf("signal %v to pid %d: %w", sig, pid, err)
	}
	return nil
}

// defaultSignal is what Terminate sends when given none.
var defaultSignal os.Signal = unix.SIGTERM
