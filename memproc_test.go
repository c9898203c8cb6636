package instancelock

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock/internal/proctest"
)

func init() {
	helpers["memproc-exit"] = func() {}
	helpers["memproc-wait"] = func() {
		fmt.Println("ready")
		bufio.NewReader(os.Stdin).ReadString('\n') // until killed or stdin closes
	}
}

// memProcContract checks what the Locker relies on from a
// ProcessTable: live is a running process, dead a pid that names none;
// after kill, live has exited.
func memProcContract(t *testing.T, pt ProcessTable, live, dead int, kill func()) {
	t.Helper()
	for _, pid := range []int{0, -1} {
		if _, err := pt.Alive(pid); !errors.Is(err, ErrInvalidLock) {
			t.Errorf("Alive(%d): got %v, want ErrInvalidLock", pid, err)
		}
		if _, _, err := pt.Start(pid); !errors.Is(err, ErrInvalidLock) {
			t.Errorf("Start(%d): got %v, want ErrInvalidLock", pid, err)
		}
		if err := pt.Signal(pid, os.Kill); !errors.Is(err, ErrInvalidLock) {
			t.Errorf("Signal(%d): got %v, want ErrInvalidLock", pid, err)
		}
	}
	if alive, err := pt.Alive(dead); alive || err != nil {
		t.Errorf("Alive(dead) = %v, %v; want false, nil", alive, err)
	}
	if _, _, err := pt.Start(dead); !errors.Is(err, ErrNoProcess) {
		t.Errorf("Start(dead): got %v, want ErrNoProcess", err)
	}
	if err := pt.Signal(dead, os.Kill); !errors.Is(err, ErrNoProcess) {
		t.Errorf("Signal(dead): got %v, want ErrNoProcess", err)
	}
	if alive, err := pt.Alive(live); !alive || err != nil {
		t.Errorf("Alive(live) = %v, %v; want true, nil", alive, err)
	}
	token, at, err := pt.Start(live)
	switch {
	case errors.Is(err, errors.ErrUnsupported):
	case err != nil:
		t.Errorf("Start(live): %v", err)
	case token == "" || at.IsZero() || at.After(time.Now()):
		t.Errorf("Start(live) = %q, %v; want a token and a past start time", token, at)
	default:
		if token2, at2, err := pt.Start(live); token2 != token || !at2.Equal(at) || err != nil {
			t.Errorf("Start(live) changed: %q %v %v, then %q %v", token, at, err, token2, at2)
		}
	}
	if err := pt.Signal(live, nil); err == nil {
		t.Error("Signal with a nil signal succeeded")
	}
	if err := pt.Signal(live, os.Kill); err != nil {
		t.Errorf("Signal(live, os.Kill): %v", err)
	}
	kill()
	if alive, err := pt.Alive(live); alive || err != nil {
		t.Errorf("Alive after exit = %v, %v; want false, nil", alive, err)
	}
}

// TestMemProcessesMatchesOS runs the same contract on the operating
// system's process table (with real child processes) and on MemProcesses.
func TestMemProcessesMatchesOS(t *testing.T) {
	t.Run("OSProcesses", func(t *testing.T) {
		gone := helperCmd(t, "memproc-exit")
		if err := gone.Run(); err != nil {
			t.Fatal(err)
		}
		cmd := helperCmd(t, "memproc-wait")
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		lr := proctest.NewLines(t, cmd)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer stdin.Close()
		lr.Expect("ready", 30*time.Second)
		memProcContract(t, OSProcesses{}, cmd.Process.Pid, gone.Process.Pid, func() {
			err := cmd.Wait() // reaps the child killed by Signal
			if err == nil {
				t.Error("the child was not killed")
			}
		})
	})
	t.Run("MemProcesses", func(t *testing.T) {
		p := NewMemProcesses()
		p.Add(4242, "tok", time.Now().Add(-time.Minute))
		memProcContract(t, p, 4242, 4343, func() { p.Remove(4242) })
		if got := p.Signals(); len(got) != 1 || got[0] != (SentSignal{4242, os.Kill}) {
			t.Errorf("Signals() = %v, want the one os.Kill", got)
		}
	})
}

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
