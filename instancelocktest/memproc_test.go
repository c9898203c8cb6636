package instancelocktest

import (
	"errors"
	"syscall"
	"testing"
	"time"
)

func TestMemProcesses(t *testing.T) {
	var p MemProcesses // the zero value is ready to use
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	p.Add(10, "a", t0)
	p.Add(20, "", t0)
	p.Add(10, "b", t0.Add(time.Hour)) // pid 10 reused
	if token, at, err := p.Start(10); token != "b" || !at.Equal(t0.Add(time.Hour)) || err != nil {
		t.Errorf("Start(10) = %q, %v, %v; want the second process", token, at, err)
	}
	if token, _, err := p.Start(20); token != "" || err != nil {
		t.Errorf("Start(20) = %q, %v; want the empty token", token, err)
	}
	if err := p.Signal(10, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	sigs := p.Signals()
	sigs[0].PID = 99 // a copy
	if got := p.Signals(); len(got) != 1 || got[0] != (SentSignal{10, syscall.SIGTERM}) {
		t.Errorf("Signals() = %v", got)
	}
	if alive, _ := p.Alive(10); !alive {
		t.Error("a signal removed the process")
	}

	// Faults: for one pid, for any, removed by a nil error, and by Clear.
	p.Fail("alive", 10, syscall.EPERM)
	p.Fail("start", 0, errors.ErrUnsupported)
	p.Fail("signal", 20, syscall.EPERM)
	if _, err := p.Alive(10); !errors.Is(err, syscall.EPERM) {
		t.Errorf("Alive(10): got %v, want EPERM", err)
	}
	if alive, err := p.Alive(20); !alive || err != nil {
		t.Errorf("Alive(20) = %v, %v; the fault for pid 10 leaked", alive, err)
	}
	for _, pid := range []int{10, 20, 30} {
		if _, _, err := p.Start(pid); !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("Start(%d): got %v, want ErrUnsupported", pid, err)
		}
	}
	if err := p.Signal(20, syscall.SIGTERM); !errors.Is(err, syscall.EPERM) {
		t.Errorf("Signal(20): got %v, want EPERM", err)
	}
	if len(p.Signals()) != 1 {
		t.Error("a failed signal was recorded")
	}
	p.Fail("start", 0, nil)
	if _, _, err := p.Start(10); err != nil {
		t.Errorf("Start(10) after the rule was removed: %v", err)
	}
	if _, err := p.Alive(10); err == nil {
		t.Error("removing the start rule removed the alive rule")
	}
	p.Clear()
	if _, err := p.Alive(10); err != nil {
		t.Errorf("Alive(10) after Clear: %v", err)
	}
	p.Remove(10)
	p.Remove(10)
	if alive, err := p.Alive(10); alive || err != nil {
		t.Errorf("Alive(10) after Remove = %v, %v", alive, err)
	}
}
