//go:build unix

package instancelock

import (
	"os"
	"syscall"
)

// defaultSignals are the signals a GracefulShutdown with nil Signals
// handles.
func defaultSignals() []os.Signal { return []os.Signal{os.Interrupt, syscall.SIGTERM} }

// signalExitCode is the status of a process killed by sig, as shells report
// it: 128 + the signal number (130 for SIGINT, 143 for SIGTERM).
func signalExitCode(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok && s > 0 && s < 128 {
		return 128 + int(s)
	}
	return 1
}
