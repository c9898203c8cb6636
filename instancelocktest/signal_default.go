//go:build unix || windows

package instancelocktest

import (
	"os"
	"syscall"
)

// defaultAction is what the Go runtime does with a signal nobody handles
// (see os/signal): status is 128 + its number.
func defaultAction(sig os.Signal, status int) error {
	switch sig {
	case syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP:
		return &ExitError{Signal: sig, Status: status, Reason: "not handled by the GracefulShutdown now: killed by the default action, no hook run"}
	case syscall.SIGQUIT, syscall.SIGILL, syscall.SIGTRAP, syscall.SIGABRT:
		return &ExitError{Signal: sig, Status: 2, Reason: "not handled by the GracefulShutdown now: the Go runtime exits with a stack dump, no hook run"}
	}
	return nil
}
