package instancelocktest

import (
	"context"
	"errors"
	"os"
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

func TestMutexFailNext(t *testing.T) {
	m := NewMutex()
	refused := errors.New("connection refused")
	m.FailNext(refused)
	if err := m.Lock(context.Background()); err != refused {
		t.Fatalf("Lock = %v, want %v", err, refused)
	}
	if err := m.Lock(context.Background()); err != nil {
		t.Fatalf("second Lock = %v, want nil", err)
	}
	m.Unlock()
	m.FailNext(nil)
	if err := m.TryLock(); err == nil {
		t.Fatal("FailNext(nil) did not make TryLock fail")
	}
}

func TestSignal(t *testing.T) {
	m := NewMutex()
	if err := m.TryLock(); err != nil {
		t.Fatal(err)
	}
	g := instancelock.NewGracefulShutdown(m)
	Signal(g, os.Interrupt)
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
}
