//go:build !unix && !windows

package instancelock

import "os"

// defaultSignals are the signals a GracefulShutdown with nil Signals
// handles: only os.Interrupt, the one signal every system has.
func defaultSignals() []os.Signal { return []os.Signal{os.Interrupt} }

// signalExitCode is 130 for os.Interrupt (128 + SIGINT, as on Unix) and 1
// for anything else.
func signalExitCode(sig os.Signal) int {
	if sig == os.Interrupt {
		return 130
	}
	return 1
}
