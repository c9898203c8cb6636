//go:build unix

package instancelock

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

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
