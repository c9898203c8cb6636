//go:build unix

package instancelock

import (
	"os"
	"os/signal"
	"sync"
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

// hangupSignal is SIGHUP, which GracefulShutdown always handles while
// started: it calls Hangup or begins the shutdown.
func hangupSignal() os.Signal { return syscall.SIGHUP }

var sigpipeOnce sync.Once

// notifySIGPIPE makes a write to a closed standard output or error return
// EPIPE instead of killing the process, for the rest of the process's life.
// Notify (not signal.Ignore) keeps SIGPIPE's default action for the
// programs the process starts.
func notifySIGPIPE() {
	sigpipeOnce.Do(func() { signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE) })
}
