package bench

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock/internal/proctest"
)

// A contender of the stale-file race: the test binary re-run as helper
// "lock-contender".
func init() { helpers["lock-contender"] = lockContender }

// lockContender prepares a lock on $BENCH_PATH with $BENCH_IMPL, prints
// "ready", waits until the barrier pipe (file descriptor 3) is closed, tries
// the lock once and prints "won" or "lost <reason>". It then keeps what it
// won until its stdin is closed, so that every winner holds at once.
func lockContender() {
	h, err := newHandle(os.Getenv(implEnv), os.Getenv(pathEnv))
	if err != nil {
		helperFail("%v", err)
	}
	barrier := os.NewFile(3, "barrier")
	fmt.Println("ready")
	io.Copy(io.Discard, barrier) // returns when the parent closes its end
	ok, err := h.try()
	switch {
	case ok:
		fmt.Println("won")
	case err != nil:
		fmt.Printf("lost %v\n", err)
	default:
		fmt.Println("lost busy")
	}
	io.Copy(io.Discard, os.Stdin)
	if ok {
		h.release()
	}
}

const (
	raceContenders = 16
	raceRounds     = 10
)

// TestStalePIDFileRace starts 16 processes at the same instant on a PID
// file left by a SIGKILLed holder and counts how many believe they hold
// the lock. With instancelock it must be exactly one in every round.
// nightlyone/lockfile breaks a stale file by removing it, so that a slow
// contender can remove a fast one's fresh file: its counts are logged, not
// asserted (more than one is expected in some rounds). gofrs/flock is
// logged for reference; it never removes its file.
func TestStalePIDFileRace(t *testing.T) {
	for _, impl := range []string{implInstancelock, implNightlyone, implGofrs} {
		t.Run(impl, func(t *testing.T) {
			counts := make([]int, raceRounds)
			over := 0
			for round := range raceRounds {
				path := filepath.Join(t.TempDir(), "race.pid")
				if err := leaveStaleFile(impl, path); err != nil {
					t.Fatal(err)
				}
				won, reasons, err := raceRound(impl, path)
				if err != nil {
					t.Fatal(err)
				}
				counts[round] = won
				if won > 1 {
					over++
				}
				if impl == implInstancelock && won != 1 {
					t.Errorf("round %d: %d of %d contenders hold the lock, want exactly 1 (losers said: %v)",
						round, won, raceContenders, reasons)
				}
			}
			t.Logf("%s: winners per round %v; %d of %d rounds with more than one holder", impl, counts, over, raceRounds)
		})
	}
}

// leaveStaleFile has a helper process take the lock on path and SIGKILLs
// it, leaving whatever the library leaves behind.
func leaveStaleFile(impl, path string) error {
	cmd := helperCmd("lock-holder", implEnv+"="+impl, pathEnv+"="+path)
	lr, err := proctest.ReadLines(cmd)
	if err != nil {
		return err
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	defer stdin.Close()
	if err := cmd.Start(); err != nil {
		return err
	}
	_, err = expect(lr, "locked", 10*time.Second)
	cmd.Process.Kill()
	cmd.Wait()
	if err != nil {
		return err
	}
	if _, err := os.Lstat(path); err != nil {
		return fmt.Errorf("the killed holder left no file: %v", err)
	}
	return nil
}

// raceRound starts the contenders, releases them together, and returns
// how many won and what the losers said.
func raceRound(impl, path string) (won int, reasons map[string]int, err error) {
	br, bw, err := os.Pipe()
	if err != nil {
		return 0, nil, err
	}
	defer bw.Close()
	type contender struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		out   *bufio.Scanner
	}
	var cs []contender
	defer func() {
		for _, c := range cs {
			c.stdin.Close()
		}
		for _, c := range cs {
			c.cmd.Wait()
		}
	}()
	for range raceContenders {
		cmd := helperCmd("lock-contender", implEnv+"="+impl, pathEnv+"="+path)
		cmd.ExtraFiles = []*os.File{br}
		stdin, err := cmd.StdinPipe()
		if err != nil {
			br.Close()
			return 0, nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			br.Close()
			return 0, nil, err
		}
		if err := cmd.Start(); err != nil {
			br.Close()
			return 0, nil, err
		}
		cs = append(cs, contender{cmd, stdin, bufio.NewScanner(out)})
	}
	br.Close()
	// A helper that dies closes its stdout, so these reads cannot hang
	// for long; the watchdog covers a helper that neither dies nor talks.
	watchdog := time.AfterFunc(30*time.Second, func() {
		for _, c := range cs {
			c.cmd.Process.Kill()
		}
	})
	defer watchdog.Stop()
	next := func(c contender) string {
		if c.out.Scan() {
			return c.out.Text()
		}
		return "<no output>"
	}
	for _, c := range cs {
		if l := next(c); l != "ready" {
			return 0, nil, fmt.Errorf("contender said %q, want ready", l)
		}
	}
	bw.Close() // the barrier: every contender's read returns now
	reasons = map[string]int{}
	for _, c := range cs {
		l := next(c)
		switch {
		case l == "won":
			won++
		case strings.HasPrefix(l, "lost "):
			reasons[strings.TrimPrefix(l, "lost ")]++
		default:
			return 0, nil, fmt.Errorf("contender said %q", l)
		}
	}
	return won, reasons, nil
}
