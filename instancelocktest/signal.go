package instancelocktest

import (
	"errors"
	"fmt"
	"os"

	"github.com/ad5dec64/instancelock"
	"github.com/ad5dec64/instancelock/internal/fakesignal"
)

// Signal does to g what receiving sig would do to the process, without
// sending a signal, and returns at once; wait with g.Done or g.Wait. Use it
// to test a program's main without signalling the test process. g's own
// watcher decides, as for a real signal:
//
//   - between Start and the end of the shutdown, a signal g handles (one of
//     Signals, and on Unix SIGHUP) begins the shutdown (the cause is an
//     *instancelock.SignalError, so ExitCode treats it as asked for); a
//     SIGHUP calls Hangup instead when Hangup is set and SIGHUP is not in
//     Signals (in a goroutine of its own, as for a real one), and is ignored
//     once the shutdown has begun. Signal returns nil.
//   - a second such signal while the shutdown runs would make the real
//     process exit at once with status 128+signal: Signal returns an
//     *ExitError with that Status, and the shutdown goes on here.
//   - any other signal, and every signal before Start or once Done is
//     closed, gets the Go runtime's default action, as in a process that
//     does not handle it. For SIGTERM, SIGINT (os.Interrupt) and SIGHUP the
//     process would be killed, with no hook run and the lock not released,
//     and for SIGQUIT, SIGILL, SIGTRAP and SIGABRT it would exit with a
//     stack dump: Signal returns an *ExitError and does nothing to g. The
//     runtime does nothing for the other signals (SIGUSR1, SIGWINCH...);
//     neither does Signal, which returns nil (a few rare ones, such as
//     SIGSYS, that end the process with a stack dump are not modelled).
//     os.Kill is never handled: always an *ExitError.
//
// Signal returns an error for a nil g or sig.
func Signal(g *instancelock.GracefulShutdown, sig os.Signal) error {
	switch {
	case g == nil:
		return errors.New("instancelocktest: Signal: nil GracefulShutdown")
	case sig == nil:
		return errors.New("instancelocktest: Signal: nil signal; pass the one the process would receive, such as syscall.SIGTERM")
	case sig == os.Kill:
		return &ExitError{Signal: sig, Status: 128 + 9, Reason: "it cannot be caught"}
	}
	o, status := fakesignal.Deliver(g, sig)
	switch o {
	case fakesignal.Handled:
		return nil
	case fakesignal.Forced:
		return &ExitError{Signal: sig, Status: status, Reason: "a second signal during the shutdown forces the exit"}
	}
	return defaultAction(sig, status)
}

// ExitError is what Signal returns when the real process would have ended
// at once instead of doing what the test expects.
type ExitError struct {
	Signal os.Signal
	// Status is the exit status a shell reports: 128 + the signal's number
	// (130 for SIGINT, 143 for SIGTERM), as GracefulShutdown's forced exit
	// gives; 2 for the stack dump of SIGQUIT and its kind. (On Windows a
	// process killed by Ctrl-C really ends with STATUS_CONTROL_C_EXIT.)
	Status int
	Reason string // why, for example "not handled: killed by the default action"
}

// Error says which signal would have ended the process, with what status
// and why.
func (e *ExitError) Error() string {
	return fmt.Sprintf("instancelocktest: signal %v would end the process at once with status %d: %s", e.Signal, e.Status, e.Reason)
}
