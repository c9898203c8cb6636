package instancelock

import (
	"os"
	"slices"

	"github.com/ad5dec64/instancelock/internal/fakesignal"
)

// A fakeSignal is a signal from instancelocktest.Signal, handed to the
// watcher, which decides on it as on one the process received and answers
// on forced whether the process would exit at once.
type fakeSignal struct {
	sig    os.Signal
	forced chan bool
}

func init() {
	fakesignal.Deliver = func(g any, sig os.Signal) (fakesignal.Outcome, int) {
		return g.(*GracefulShutdown).deliverFake(sig), signalExitCode(sig)
	}
}

// deliverFake hands sig to the watcher if signal.Notify would relay it
// there now (between Start and the end of the shutdown, sig among the
// signals Start handles), and says what came of it.
func (g *GracefulShutdown) deliverFake(sig os.Signal) fakesignal.Outcome {
	g.init()
	g.mu.Lock()
	fakes, handled := g.fakes, slices.Contains(g.notified, sig)
	g.mu.Unlock()
	if fakes == nil || !handled {
		return fakesignal.Unhandled
	}
	f := fakeSignal{sig, make(chan bool, 1)}
	select {
	case fakes <- f:
	case <-g.done: // finished: the handlers are removed
		return fakesignal.Unhandled
	}
	if <-f.forced {
		return fakesignal.Forced
	}
	return fakesignal.Handled
}
