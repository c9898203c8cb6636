//go:build !unix && !windows

package instancelocktest

import "os"

// defaultAction is what the Go runtime does with a signal nobody handles:
// os.Interrupt ends the process; the rest is not modelled.
func defaultAction(sig os.Signal, status int) error {
	if sig == os.Interrupt {
		return &ExitError{Signal: sig, Status: status, Reason: "not handled by the GracefulShutdown now: killed by the default action, no hook run"}
	}
	return nil
}
