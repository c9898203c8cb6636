package instancelock

import (
	"errors"
	"fmt"
	"os"
	"time"
)

// ProcessTable answers the Locker's questions about other processes: the
// operating system's by default, a fake in tests
// (instancelocktest.MemProcesses, set as Locker.Processes).
type ProcessTable interface {
	// Alive reports whether a process with this pid exists. On Unix it is
	// kill(pid, 0): ESRCH means dead and EPERM means alive (the process
	// belongs to another user). On Windows, OpenProcess failing with access
	// denied means alive, and exit code 259 (STILL_ACTIVE) means running.
	Alive(pid int) (bool, error)
	// Start returns a token that identifies the process beyond its pid, and
	// the time it started. The error matches ErrNoProcess when there is no
	// such process and errors.ErrUnsupported where the platform cannot
	// tell.
	Start(pid int) (token string, at time.Time, err error)
	// Signal sends sig to the process. The error matches ErrNoProcess when
	// there is no such process.
	Signal(pid int, sig os.Signal) error
}

// ErrNoProcess is matched by ProcessTable errors about a pid that names no
// process.
var ErrNoProcess = errors.New("no such process")

// osProcesses is the operating system's process table, the default
// ProcessTable.
type osProcesses struct{}

var _ ProcessTable = osProcesses{}

// Alive implements ProcessTable.
func (osProcesses) Alive(pid int) (bool, error) {
	if pid <= 0 {
		return false, fmt.Errorf("pid %d: %w", pid, ErrInvalidLock)
	}
	return processAlive(pid)
}

// Start implements ProcessTable.
func (osProcesses) Start(pid int) (string, time.Time, error) {
	if pid <= 0 {
		return "", time.Time{}, fmt.Errorf("pid %d: %w", pid, ErrInvalidLock)
	}
	return processStart(pid)
}

// Signal implements ProcessTable. A nil sig is rejected.
func (osProcesses) Signal(pid int, sig os.Signal) error {
	if pid <= 0 {
		return fmt.Errorf("pid %d: %w", pid, ErrInvalidLock)
	}
	if sig == nil {
		return errors.New("instancelock: nil signal")
	}
	return processSignal(pid, sig)
}
