//go:build windows

package instancelock

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/windows"
)

const stillActive = 259 // STILL_ACTIVE

// processAlive opens the process: access denied means it exists (another
// user's); ERROR_INVALID_PARAMETER means no such process; an exit code of
// STILL_ACTIVE means it is running.
func processAlive(pid int) (bool, error) {
	h, err := windows.OpenProcess(windows.PROCESS_QUERY_LIMITED_INFORMATION, false, uint32(pid))
	switch {
	case errors.Is(err, windows.ERROR_ACCESS_DENIED):
		return true, nil
	case errors.Is(err, windows.ERROR_INVALID_PARAMETER):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("OpenProcess(%d): %w", pid, err)
	}
	defer windows.CloseHandle(h)
	var code uint32
	if err := windows.GetExitCodeProcess(h, &code); err != nil {
		return false, fmt.Errorf("GetExitCodeProcess(%d): %w", pid, err)
	}
	return code == stillActive, nil
}

// processStart returns the creation time from GetProcessTimes. The token is
// "windows:<creation time in 100 ns units>".
func processStart(pid int) (string, time.Time, error) {
	h, err := windows.OpenProcess(windows.PROCESS_QUERY_LIMITED_INFORMATION, false, uint32(pid))
	if errors.Is(err, windows.ERROR_INVALID_PARAMETER) {
		return "", time.Time{}, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	if err != nil {
		return "", time.Time{}, fmt.Errorf("OpenProcess(%d): %w", pid, err)
	}
	defer windows.CloseHandle(h)
	// An exited process whose object lives on (a handle to it is still
	// open somewhere) is no process.
	var code uint32
	if err := windows.GetExitCodeProcess(h, &code); err == nil && code != stillActive {
		return "", time.Time{}, fmt.Errorf("pid %d: %w (it exited with status %d)", pid, ErrNoProcess, code)
	}
	var creation, exit, kernel, user windows.Filetime
	if err := windows.GetProcessTimes(h, &creation, &exit, &kernel, &user); err != nil {
		return "", time.Time{}, fmt.Errorf("GetProcessTimes(%d): %w", pid, err)
	}
	ft := int64(creation.HighDateTime)<<32 | int64(creation.LowDateTime)
	return "windows:" + strconv.FormatInt(ft, 10), time.Unix(0, creation.Nanoseconds()), nil
}

// processSignal: Windows has no signals; os.Kill terminates the process,
// anything else is unsupported. A process that has exited but whose
// object lives on (another process still has a handle to it) counts as no
// process: TerminateProcess would succeed on it and do nothing.
func processSignal(pid int, sig os.Signal) error {
	if sig != os.Kill {
		return fmt.Errorf("signal %v to pid %d: %w (Windows supports only os.Kill)", sig, pid, errors.ErrUnsupported)
	}
	h, err := windows.OpenProcess(windows.PROCESS_TERMINATE|windows.PROCESS_QUERY_LIMITED_INFORMATION, false, uint32(pid))
	if errors.Is(err, windows.ERROR_INVALID_PARAMETER) {
		return fmt.Errorf("kill pid %d: %w", pid, ErrNoProcess)
	}
	if err != nil {
		return fmt.Errorf("OpenProcess(%d): %w", pid, err)
	}
	defer windows.CloseHandle(h)
	var code uint32
	if err := windows.GetExitCodeProcess(h, &code); err != nil {
		return fmt.Errorf("GetExitCodeProcess(%d): %w", pid, err)
	}
	if code != stillActive {
		return fmt.Errorf("kill pid %d: %w (it exited with status %d)", pid, ErrNoProcess, code)
	}
	if err := windows.TerminateProcess(h, 1); err != nil {
		return fmt.Errorf("TerminateProcess(%d): %w", pid, err)
	}
	return nil
}

// defaultSignal is what Terminate sends when given none. Windows can only
// kill.
var defaultSignal = os.Kill
