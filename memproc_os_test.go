package instancelock_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock"
	"github.com/ad5dec64/instancelock/instancelocktest"

	"github.com/ad5dec64/instancelock/internal/proctest"
)

func init() {
	instancelock.Helpers["memproc-exit"] = func() {}
	instancelock.Helpers["memproc-wait"] = func() {
		fmt.Println("ready")
		bufio.NewReader(os.Stdin).ReadString('\n') // until killed or stdin closes
	}
}

// memProcContract checks what the Locker relies on from a
// ProcessTable: live is a running process, dead a pid that names none;
// after kill, live has exited.
func memProcContract(t *testing.T, pt instancelock.ProcessTable, live, dead int, kill func()) {
	t.Helper()
	for _, pid := range []int{0, -1} {
		if _, err := pt.Alive(pid); !errors.Is(err, instancelock.ErrInvalidLock) {
			t.Errorf("Alive(%d): got %v, want ErrInvalidLock", pid, err)
		}
		if _, _, err := pt.Start(pid); !errors.Is(err, instancelock.ErrInvalidLock) {
			t.Errorf("Start(%d): got %v, want ErrInvalidLock", pid, err)
		}
		if err := pt.Signal(pid, os.Kill); !errors.Is(err, instancelock.ErrInvalidLock) {
			t.Errorf("Signal(%d): got %v, want ErrInvalidLock", pid, err)
		}
	}
	if alive, err := pt.Alive(dead); alive || err != nil {
		t.Errorf("Alive(dead) = %v, %v; want false, nil", alive, err)
	}
	if _, _, err := pt.Start(dead); !errors.Is(err, instancelock.ErrNoProcess) {
		t.Errorf("Start(dead): got %v, want ErrNoProcess", err)
	}
	if err := pt.Signal(dead, os.Kill); !errors.Is(err, instancelock.ErrNoProcess) {
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
		gone := instancelock.HelperCmd(t, "memproc-exit")
		if err := gone.Run(); err != nil {
			t.Fatal(err)
		}
		cmd := instancelock.HelperCmd(t, "memproc-wait")
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
		memProcContract(t, instancelock.OSProcesses, cmd.Process.Pid, gone.Process.Pid, func() {
			err := cmd.Wait() // reaps the child killed by Signal
			if err == nil {
				t.Error("the child was not killed")
			}
		})
	})
	t.Run("MemProcesses", func(t *testing.T) {
		p := instancelocktest.NewMemProcesses()
		p.Add(4242, "tok", time.Now().Add(-time.Minute))
		memProcContract(t, p, 4242, 4343, func() { p.Remove(4242) })
		if got := p.Signals(); len(got) != 1 || got[0] != (instancelocktest.SentSignal{PID: 4242, Signal: os.Kill}) {
			t.Errorf("Signals() = %v, want the one os.Kill", got)
		}
	})
}
