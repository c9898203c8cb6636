// Package fakesignal is the seam between package instancelock and
// instancelocktest.Signal: it lets the fake hand a signal to a
// GracefulShutdown's signal watcher, which decides on it as on a signal the
// process received, without exporting anything from instancelock.
package fakesignal

import "os"

// Outcome is what a GracefulShutdown did with a signal handed to Deliver.
type Outcome int

const (
	// Unhandled: the helper does not handle the signal now (not started,
	// already finished, or the signal is not among those it handles), so
	// the runtime's default action would apply.
	Unhandled Outcome = iota
	// Handled: the helper took it as it takes a received signal: it began
	// the shutdown, called Hangup, or ignored it (a SIGHUP during the
	// shutdown, a signal once the shutdown has begun for another reason).
	Handled
	// Forced: it was a second signal during the shutdown; the real process
	// exits at once with the status Deliver returns.
	Forced
)

// Deliver is set by package instancelock (g is a
// *instancelock.GracefulShutdown). The status it returns is the one the
// helper gives a forced exit by sig (128 + the signal's number, 1 when it
// has none).
var Deliver func(g any, sig os.Signal) (o Outcome, status int)
