package instancelock_test

import (
	"context"
	"errors"
	"syscall"
	"testing"

	"github.com/ad5dec64/instancelock"
	"github.com/ad5dec64/instancelock/instancelocktest"
)

// A fake SIGTERM (instancelocktest.Signal) goes through the helper's own
// decision on a signal: the hooks run and the shutdown, asked for, exits 0.
func TestFakeSignalRunsTheShutdown(t *testing.T) {
	g := instancelock.NewGracefulShutdown(nil)
	ran := false
	g.Add("db", func(context.Context) error { ran = true; return nil })
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := instancelocktest.Signal(g, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-g.Done()
	if !ran {
		t.Error("the hook did not run")
	}
	var se *instancelock.SignalError
	if err := context.Cause(g.Context()); !errors.As(err, &se) {
		t.Errorf("cause %v, want a *SignalError", err)
	}
	if code := g.ExitCode(); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	// After Done, the signal is not handled: the real process would be
	// killed by its default action.
	var ee *instancelocktest.ExitError
	if err := instancelocktest.Signal(g, syscall.SIGTERM); !errors.As(err, &ee) {
		t.Errorf("a SIGTERM after the shutdown: %v, want an *ExitError", err)
	}
}
