//go:build windows

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

// signalExitCode follows the Unix convention, 128 + the signal number (130
// for SIGINT, 143 for SIGTERM), so that scripts see the same codes on every
// system.
func signalExitCode(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok && s > 0 && s < 128 {
		return 128 + int(s)
	}
	return 1
}

// hangupSignal is nil: there is no SIGHUP here.
func hangupSignal() os.Signal { return nil }

// notifySIGPIPE does nothing: there is no SIGPIPE here.
func notifySIGPIPE() {}
