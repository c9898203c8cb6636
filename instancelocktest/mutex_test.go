package instancelocktest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock"
)

func TestMutexTryLockUnlock(t *testing.T) {
	m := NewMutex()
	if _, err := m.Holder(); !errors.Is(err, instancelock.ErrNotRunning) {
		t.Fatalf("Holder of a free Mutex: %v, want ErrNotRunning", err)
	}
	if err := m.Err(); !errors.Is(err, instancelock.ErrNotHeld) {
		t.Fatalf("Err of a free Mutex: %v, want ErrNotHeld", err)
	}
	if m.Lost() != nil {
		t.Fatal("Lost of a never-held Mutex is not nil")
	}
	if err := m.TryLock(); err != nil {
		t.Fatal(err)
	}
	if err := m.TryLock(); !errors.Is(err, instancelock.ErrAlreadyHeld) {
		t.Fatalf("second TryLock while held: %v, want ErrAlreadyHeld", err)
	}
	if err := m.Lock(context.Background()); !errors.Is(err, instancelock.ErrAlreadyHeld) {
		t.Fatalf("Lock while held: %v, want ErrAlreadyHeld", err)
	}
	h, err := m.Holder()
	if err != nil || h.PID != os.Getpid() || h.InstanceID != m.InstanceID() || m.InstanceID() == "" {
		t.Fatalf("Holder = %+v, %v; want this process with id %q", h, err, m.InstanceID())
	}
	if tok, ok := m.FencingToken(); tok != 1 || !ok {
		t.Fatalf("FencingToken = %d, %v; want 1, true", tok, ok)
	}
	for range 2 {
		if err := m.Unlock(); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := m.FencingToken(); ok {
		t.Fatal("FencingToken reports a holding after Unlock")
	}
	if err := m.TryLock(); err != nil {
		t.Fatal(err)
	}
	if tok, _ := m.FencingToken(); tok != 2 {
		t.Fatalf("token of the second holding = %d, want 2", tok)
	}
}

func TestMutexOtherHolder(t *testing.T) {
	m := NewMutex()
	other := instancelock.ProcessLock{PID: 77, Hostname: "db-2"}
	m.SetHolder(other)
	err := m.TryLock()
	var are *instancelock.AlreadyRunningError
	if !errors.As(err, &are) || are.Holder != other || !errors.Is(err, instancelock.ErrAlreadyRunning) {
		t.Fatalf("TryLock = %v, want an AlreadyRunningError naming %+v", err, other)
	}
	if h, err := m.Holder(); err != nil || h != other {
		t.Fatalf("Holder = %+v, %v", h, err)
	}

	ctx, cancel := context.WithTimeoutCause(context.Background(), 20*time.Millisecond, errors.New("gave up"))
	defer cancel()
	if err := m.Lock(ctx); err == nil || err.Error() != "gave up" {
		t.Fatalf("Lock while held by another, ctx ended: %v, want the context's cause", err)
	}

	got := make(chan error)
	go func() { got <- m.Lock(context.Background()) }()
	select {
	case err := <-got:
		t.Fatalf("Lock returned %v while another instance holds the lock", err)
	case <-time.After(20 * time.Millisecond):
	}
	m.Release()
	if err := <-got; err != nil {
		t.Fatalf("Lock after Release: %v", err)
	}
	if err := m.Err(); err != nil {
		t.Fatalf("Err after Lock: %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("SetHolder while held did not panic")
		}
	}()
	m.SetHolder(other)
}

func TestMutexLose(t *testing.T) {
	m := NewMutex()
	m.Lose(nil) // not held: nothing happens
	if err := m.Err(); !errors.Is(err, instancelock.ErrNotHeld) {
		t.Fatalf("Err after Lose of a free Mutex: %v", err)
	}
	if err := m.TryLock(); err != nil {
		t.Fatal(err)
	}
	lost := m.Lost()
	cause := errors.New("lease expired")
	m.Lose(cause)
	select {
	case <-lost:
	default:
		t.Fatal("Lost not closed by Lose")
	}
	if err := m.Err(); !errors.Is(err, instancelock.ErrLockLost) || !errors.Is(err, cause) {
		t.Fatalf("Err after Lose = %v, want ErrLockLost and the cause", err)
	}
	if err := m.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := m.TryLock(); err != nil {
		t.Fatalf("TryLock after a loss: %v", err)
	}
	if err := m.Err(); err != nil {
		t.Fatalf("Err of a new holding: %v", err)
	}
	if m.Lost() == lost {
		t.Fatal("a new holding reuses the lost channel")
	}
}

// TestMutexFailNext: the error given to FailNext fails the next attempt
// once; Lock ends on it unless the fleet locks' Lock rides it out (a
// *net.OpError, io.EOF), and then takes the lock, or ends with ctx.
func TestMutexFailNext(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	for _, c := range []struct {
		name    string
		err     error
		endLock bool // Lock returns the error
	}{
		{"I/O error", syscall.EIO, true},
		{"bare ECONNREFUSED", syscall.ECONNREFUSED, true},
		{"refused connection", refused, false},
		{"wrapped refused connection", fmt.Errorf("pglock: connect: %w", refused), false},
		{"EOF", io.EOF, false},
		{"unexpected EOF", io.ErrUnexpectedEOF, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := NewMutex()
			m.FailNext(c.err)
			if err := m.TryLock(); err != c.err {
				t.Fatalf("TryLock = %v, want %v", err, c.err)
			}
			mustDo(t, m.TryLock())
			mustDo(t, m.Unlock())

			m.FailNext(c.err)
			err := m.Lock(context.Background())
			if c.endLock {
				if err != c.err {
					t.Fatalf("Lock = %v, want %v", err, c.err)
				}
				mustDo(t, m.Lock(context.Background()))
			} else if err != nil {
				t.Fatalf("Lock = %v, want it to ride the error out", err)
			}
			if tok, ok := m.FencingToken(); !ok || tok != 2 {
				t.Fatalf("FencingToken = %d, %v after Lock; want 2, true", tok, ok)
			}
			mustDo(t, m.Unlock())

			// Retried, until ctx ends: the error says both.
			ctx, cancel := context.WithCancelCause(context.Background())
			stop := errors.New("test over")
			cancel(stop)
			m.FailNext(c.err)
			err = m.Lock(ctx)
			if !errors.Is(err, c.err) || c.endLock == errors.Is(err, stop) {
				t.Fatalf("Lock with ctx done = %v", err)
			}
		})
	}
	m := NewMutex()
	m.FailNext(nil)
	if err := m.TryLock(); err == nil {
		t.Fatal("FailNext(nil) did not make TryLock fail")
	}
}

// TestSignal: before Start a signal would kill the process (Signal says
// so and does nothing); after Start it begins the shutdown; a second one
// during the shutdown would force the exit. TestSignalLikeReal compares
// more cases with real signals (Unix).
func TestSignal(t *testing.T) {
	m := NewMutex()
	if err := m.TryLock(); err != nil {
		t.Fatal(err)
	}
	g := instancelock.NewGracefulShutdown(m)
	release := make(chan struct{})
	g.Add("hook", func(context.Context) error { <-release; return nil })
	var ee *ExitError
	if err := Signal(g, os.Interrupt); !errors.As(err, &ee) || ee.Status != 130 || g.Context().Err() != nil {
		t.Fatalf("Signal before Start = %v (shutdown begun: %v), want an *ExitError with status 130 and no shutdown", err, g.Context().Err() != nil)
	}
	mustDo(t, g.Start(context.Background()))
	mustDo(t, Signal(g, os.Interrupt))
	if err := Signal(g, os.Interrupt); !errors.As(err, &ee) || ee.Status != 130 {
		t.Fatalf("second Signal = %v, want an *ExitError with status 130", err)
	}
	close(release)
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	var se *instancelock.SignalError
	if cause := context.Cause(g.Context()); !errors.As(cause, &se) || se.Signal != os.Interrupt {
		t.Fatalf("cause = %v, want a SignalError for os.Interrupt", cause)
	}
	if g.ExitCode() != 0 || m.Err() != instancelock.ErrNotHeld {
		t.Fatalf("exit code %d, lock %v", g.ExitCode(), m.Err())
	}
	if err := Signal(g, os.Interrupt); !errors.As(err, &ee) || ee.Status != 130 {
		t.Fatalf("Signal after Done = %v, want an *ExitError with status 130", err)
	}
	if err := Signal(g, nil); err == nil || errors.As(err, &ee) {
		t.Fatalf("Signal(g, nil) = %v, want an error", err)
	}
	if err := Signal(nil, os.Interrupt); err == nil || errors.As(err, &ee) {
		t.Fatalf("Signal(nil, sig) = %v, want an error", err)
	}
}

// TestMutexLikeLocker: the fake answers Lost and Err as the real PID-file
// Locker does (on a real file in a temporary directory) before, during and
// after a holding, and before and after Unlock of a lost one: a program
// tested against the fake that selects on Lost after Unlock blocks in
// production too (a nil channel).
func TestMutexLikeLocker(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("a held PID file cannot be removed on Windows, so the Locker cannot be made to lose it here")
	}
	real, err := instancelock.New(filepath.Join(t.TempDir(), "app.pid"))
	if err != nil {
		t.Fatal(err)
	}
	real.DisableRepublish = true // a removed file is a loss at once
	fake := NewMutex()
	locks := []struct {
		name string
		m    instancelock.Mutex
		lose func()
	}{
		{"Locker", real, func() {
			if err := os.Remove(real.Path()); err != nil {
				t.Fatal(err)
			}
			for deadline := time.Now().Add(20 * time.Second); !errors.Is(real.Err(), instancelock.ErrLockLost); time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the Locker did not notice its removed file: Err() = %v", real.Err())
				}
			}
		}},
		{"instancelocktest.Mutex", fake, func() { fake.Lose(nil) }},
	}
	// state says what Lost and Err answer: Lost nil, open or closed; Err
	// nil or matching a sentinel.
	state := func(m instancelock.Mutex) string {
		lost := "nil"
		if ch := m.Lost(); ch != nil {
			lost = "open"
			select {
			case <-ch:
				lost = "closed"
			default:
			}
		}
		err := m.Err()
		for _, e := range []error{instancelock.ErrNotHeld, instancelock.ErrLockLost} {
			if errors.Is(err, e) {
				return "Lost " + lost + ", Err " + e.Error()
			}
		}
		return fmt.Sprintf("Lost %s, Err %v", lost, err)
	}
	steps := []struct {
		name string
		do   func(m instancelock.Mutex, lose func())
		want string
	}{
		{"before", func(instancelock.Mutex, func()) {}, "Lost nil, Err " + instancelock.ErrNotHeld.Error()},
		{"held", func(m instancelock.Mutex, _ func()) { mustDo(t, m.TryLock()) }, "Lost open, Err <nil>"},
		{"after Unlock", func(m instancelock.Mutex, _ func()) { mustDo(t, m.Unlock()) }, "Lost nil, Err " + instancelock.ErrNotHeld.Error()},
		{"held again", func(m instancelock.Mutex, _ func()) { mustDo(t, m.TryLock()) }, "Lost open, Err <nil>"},
		{"lost", func(_ instancelock.Mutex, lose func()) { lose() }, "Lost closed, Err " + instancelock.ErrLockLost.Error()},
		{"TryLock after a loss", func(m instancelock.Mutex, _ func()) { mustAlreadyHeld(t, "TryLock", m.TryLock()) }, "Lost closed, Err " + instancelock.ErrLockLost.Error()},
		{"Lock after a loss", func(m instancelock.Mutex, _ func()) { mustAlreadyHeld(t, "Lock", m.Lock(context.Background())) }, "Lost closed, Err " + instancelock.ErrLockLost.Error()},
		{"after Unlock of a lost holding", func(m instancelock.Mutex, _ func()) { mustDo(t, m.Unlock()) }, "Lost nil, Err " + instancelock.ErrLockLost.Error()},
		{"after a second Unlock", func(m instancelock.Mutex, _ func()) { mustDo(t, m.Unlock()) }, "Lost nil, Err " + instancelock.ErrLockLost.Error()},
		{"TryLock after Unlock of a lost holding", func(m instancelock.Mutex, _ func()) { mustDo(t, m.TryLock()) }, "Lost open, Err <nil>"},
		{"Unlock", func(m instancelock.Mutex, _ func()) { mustDo(t, m.Unlock()) }, "Lost nil, Err " + instancelock.ErrNotHeld.Error()},
	}
	for _, s := range steps {
		var got []string
		for _, l := range locks {
			s.do(l.m, l.lose)
			got = append(got, state(l.m))
			if got[len(got)-1] != s.want {
				t.Errorf("%s: %s: %s, want %s", s.name, l.name, got[len(got)-1], s.want)
			}
		}
		if got[0] != got[1] {
			t.Errorf("%s: the fake says %q, the Locker %q", s.name, got[1], got[0])
		}
	}
}

// mustAlreadyHeld fails t unless err (of op) matches ErrAlreadyHeld.
func mustAlreadyHeld(t *testing.T, op string, err error) {
	t.Helper()
	if !errors.Is(err, instancelock.ErrAlreadyHeld) {
		t.Fatalf("%s = %v, want an error matching ErrAlreadyHeld", op, err)
	}
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
