//go:build unix || windows

package instancelock

import (
	"os"
	"syscall"
)

// defaultSignals are the signals a GracefulShutdown with nil Signals
// handles. On Windows, os.Interrupt is Ctrl-C or Ctrl-Break and the Go
// runtime delivers the console close, logoff and shutdown events as
// syscall.SIGTERM.
func defaultSignals() []os.Signal { return []os.Signal{os.Interrupt, syscall.SIGTERM} }

// signalExitCode is the status of a process killed by sig, as shells report
// it: 128 + the signal number (130 for SIGINT, 143 for SIGTERM). Windows
// follows the same convention, so that scripts see the same codes on every
// system.
func signalExitCode(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok && s > 0 && s < 128 {
		return 128 + int(s)
	}
	return 1
}
