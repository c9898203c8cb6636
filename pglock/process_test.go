//go:build unix

package pglock

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock"
	"github.com/ad5dec64/instancelock/internal/proctest"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func init() {
	helpers["pglock-contender"] = helperContender
	helpers["pglock-locker"] = helperLocker
	helpers["pglock-holder"] = helperHolder
}

// helperContender is one process of the barrier stress test. It obeys
// lines on stdin:
//
//	go R       print "ready R", wait at the barrier (a shared flock the
//	           parent holds exclusively), then TryLock once and print
//	           "won R <token>", "lost R <holder pid>" or "err R <error>"
//	release R  if it holds the lock: append "R exit <pid>" to the ledger,
//	           Unlock, print "released R"
//
// A winner appends "R enter <pid> <token>" to the ledger as soon as it
// holds the lock; the ledger is opened O_APPEND so lines never mix.
func helperContender() {
	l, err := New(testDSN, os.Getenv("NAME"))
	if err != nil {
		fmt.Println("err 0", err)
		return
	}
	ledger, err := os.OpenFile(os.Getenv("LEDGER"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		fmt.Println("err 0", err)
		return
	}
	pid := os.Getpid()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		verb, round, _ := strings.Cut(in.Text(), " ")
		switch verb {
		case "go":
			if err := proctest.WaitBarrier(os.Getenv("BARRIER"), func() { fmt.Println("ready", round) }); err != nil {
				fmt.Println("err", round, err)
				continue
			}
			err := l.TryLock()
			var are *instancelock.AlreadyRunningError
			switch {
			case err == nil:
				tok, _ := l.FencingToken()
				fmt.Fprintf(ledger, "%s enter %d %d\n", round, pid, tok)
				fmt.Println("won", round, tok)
			case errors.As(err, &are):
				fmt.Println("lost", round, are.Holder.PID)
			default:
				fmt.Println("err", round, strings.ReplaceAll(err.Error(), "\n", " "))
			}
		case "release":
			if l.Err() == nil {
				fmt.Fprintf(ledger, "%s exit %d\n", round, pid)
				if err := l.Unlock(); err != nil {
					fmt.Println("err", round, err)
					continue
				}
			}
			fmt.Println("released", round)
		}
	}
}

// helperLocker takes the lock ROUNDS times with Lock, holding it for a
// moment each time, and writes its tenures to the ledger: "enter <pid>
// <token>" and "exit <pid>". It prints "done" or "err <error>".
func helperLocker() {
	rounds, _ := strconv.Atoi(os.Getenv("ROUNDS"))
	l, err := New(testDSN, os.Getenv("NAME"))
	if err != nil {
		fmt.Println("err", err)
		return
	}
	ledger, err := os.OpenFile(os.Getenv("LEDGER"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		fmt.Println("err", err)
		return
	}
	pid := os.Getpid()
	for range rounds {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := l.Lock(ctx)
		cancel()
		if err != nil {
			fmt.Println("err", strings.ReplaceAll(err.Error(), "\n", " "))
			return
		}
		tok, _ := l.FencingToken()
		fmt.Fprintf(ledger, "enter %d %d\n", pid, tok)
		time.Sleep(3 * time.Millisecond)
		if l.Err() != nil {
			fmt.Println("err", l.Err())
			return
		}
		fmt.Fprintf(ledger, "exit %d\n", pid)
		if err := l.Unlock(); err != nil {
			fmt.Println("err", err)
			return
		}
	}
	fmt.Println("done")
}

// helperHolder takes the lock with Lock, prints "held <token>", then
// waits to be killed; it prints "lost <error>" if it loses the lock.
func helperHolder() {
	l, err := New(testDSN, os.Getenv("NAME"))
	if err != nil {
		fmt.Println("err", err)
		return
	}
	if err := l.Lock(context.Background()); err != nil {
		fmt.Println("err", err)
		return
	}
	tok, _ := l.FencingToken()
	fmt.Println("held", tok)
	<-l.Lost()
	fmt.Println("lost", l.Err())
	time.Sleep(time.Hour) // until killed
}

// holder is a helper process holding a lock.
type holder struct {
	cmd   *exec.Cmd
	out   *proctest.Lines
	token uint64
}

// startHolder starts a helper process that takes name's lock and waits
// until it holds it.
func startHolder(t testing.TB, name string) *holder {
	t.Helper()
	cmd := helperCmd(t, "pglock-holder", "NAME="+name)
	out := proctest.NewLines(t, cmd)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line := out.Next(30 * time.Second)
	tok, ok := strings.CutPrefix(line, "held ")
	require.True(t, ok, line)
	n, err := strconv.ParseUint(tok, 10, 64)
	require.NoError(t, err)
	return &holder{cmd: cmd, out: out, token: n}
}

// kill SIGKILLs the holder and reaps it.
func (h *holder) kill(t testing.TB) {
	t.Helper()
	require.NoError(t, h.cmd.Process.Signal(unix.SIGKILL))
	h.cmd.Wait()
}

// Exactly one holder, always: 16 processes released at the same instant
// try the lock, over many rounds. Exactly one wins each round, every loser
// names the winner, tokens grow from round to round, and the ledger of
// tenures never overlaps.
func TestStressSixteenContenders(t *testing.T) {
	needPG(t)
	procs, rounds := 16, 40
	if testing.Short() {
		procs, rounds = 8, 10
	}
	dir := t.TempDir()
	name := lockName(t)
	barrier := filepath.Join(dir, "barrier")
	bar := proctest.NewBarrier(t, barrier)
	ledger := filepath.Join(dir, "ledger")
	require.NoError(t, os.WriteFile(ledger, nil, 0o644))

	type contender struct {
		in  io.Writer
		out *proctest.Lines
		pid int
	}
	cs := make([]*contender, procs)
	for i := range cs {
		cmd := helperCmd(t, "pglock-contender", "NAME="+name, "BARRIER="+barrier, "LEDGER="+ledger)
		in, out := proctest.Start(t, cmd)
		cs[i] = &contender{in: in, out: out, pid: cmd.Process.Pid}
	}

	start := time.Now()
	var lastToken uint64
	for r := range rounds {
		bar.Hold()
		for _, c := range cs {
			fmt.Fprintf(c.in, "go %d\n", r)
		}
		for _, c := range cs {
			require.Equal(t, fmt.Sprintf("ready %d", r), c.out.Next(30*time.Second))
		}
		bar.Release() // after a pause that lets them all block at the barrier

		var winners []int
		var losers []string
		for _, c := range cs {
			line := c.out.Next(30 * time.Second)
			if tok, ok := strings.CutPrefix(line, fmt.Sprintf("won %d ", r)); ok {
				winners = append(winners, c.pid)
				n, err := strconv.ParseUint(tok, 10, 64)
				require.NoError(t, err)
				require.Greater(t, n, lastToken, "round %d: the fencing token did not grow", r)
				lastToken = n
				continue
			}
			holder, ok := strings.CutPrefix(line, fmt.Sprintf("lost %d ", r))
			require.True(t, ok, "round %d: contender %d: %s", r, c.pid, line)
			losers = append(losers, holder)
		}
		require.Len(t, winners, 1, "round %d: winners %v", r, winners)
		for _, l := range losers {
			require.Equal(t, strconv.Itoa(winners[0]), l, "round %d: a loser names another holder", r)
		}
		for _, c := range cs {
			fmt.Fprintf(c.in, "release %d\n", r)
		}
		for _, c := range cs {
			require.Equal(t, fmt.Sprintf("released %d", r), c.out.Next(30*time.Second))
		}
	}
	t.Logf("%d processes × %d rounds in %v", procs, rounds, time.Since(start).Round(time.Millisecond))

	data, err := os.ReadFile(ledger)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	require.Len(t, lines, 2*rounds)
	checkLedger(t, lines, 1)
}

// Exactly one holder, always, with waiting: 16 processes each take the lock
// several times with Lock, as fast as they can. The ledger of tenures never
// overlaps and the tokens grow with every tenure.
func TestStressSixteenWaiters(t *testing.T) {
	needPG(t)
	procs, rounds := 16, 8
	if testing.Short() {
		procs, rounds = 8, 2
	}
	ledger := filepath.Join(t.TempDir(), "ledger")
	require.NoError(t, os.WriteFile(ledger, nil, 0o644))
	name := lockName(t)
	outs := make([]*proctest.Lines, procs)
	start := time.Now()
	for i := range outs {
		cmd := helperCmd(t, "pglock-locker", "NAME="+name, "LEDGER="+ledger, fmt.Sprintf("ROUNDS=%d", rounds))
		outs[i] = proctest.NewLines(t, cmd)
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	}
	for _, out := range outs {
		require.Equal(t, "done", out.Next(60*time.Second))
	}
	t.Logf("%d processes × %d acquisitions with Lock in %v", procs, rounds, time.Since(start).Round(time.Millisecond))
	data, err := os.ReadFile(ledger)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	require.Len(t, lines, 2*procs*rounds)
	checkLedger(t, lines, 0)
}

// checkLedger checks that every tenure closes before the next one opens
// and that tokens grow. Fields from "enter"/"exit" on: verb, pid, token.
func checkLedger(t *testing.T, lines []string, skip int) {
	t.Helper()
	holding := ""
	var lastToken uint64
	for i, line := range lines {
		f := strings.Fields(line)[skip:]
		switch f[0] {
		case "enter":
			require.Len(t, f, 3, "ledger line %d: %q", i, line)
			require.Empty(t, holding, "ledger line %d: %s entered while %s held the lock", i, line, holding)
			holding = f[1]
			tok, err := strconv.ParseUint(f[2], 10, 64)
			require.NoError(t, err)
			require.Greater(t, tok, lastToken, "ledger line %d", i)
			lastToken = tok
		case "exit":
			require.Equal(t, holding, f[1], "ledger line %d", i)
			holding = ""
		default:
			t.Fatalf("ledger line %d: %q", i, line)
		}
	}
}

// The holder process is SIGKILLed: the kernel closes its socket, the server
// ends its session and frees the lock at once, and a waiting Locker takes
// over (it can see the holder's process is gone, so it need not wait for
// the holder's keep-alive). Holder then names the new holder.
func TestTakeoverAfterSIGKILL(t *testing.T) {
	needPG(t)
	name := lockName(t)
	h := startHolder(t, name)
	w := newLocker(t, name)
	took, err := takeover(t, h, w)
	require.NoError(t, err)
	t.Logf("takeover %v after SIGKILL", took.Round(time.Microsecond))
	require.Less(t, took, 5*time.Second, "liveness bound only; the speed figure is BenchmarkTakeoverAfterSIGKILL")
	tok, ok := w.FencingToken()
	require.True(t, ok)
	require.Greater(t, tok, h.token)
	pl, err := w.Holder()
	require.NoError(t, err)
	require.Equal(t, w.InstanceID(), pl.InstanceID)
}

// takeover starts w.Lock, lets it poll for a while, SIGKILLs h and returns
// the time from the kill to w holding the lock.
func takeover(t testing.TB, h *holder, w *Locker) (time.Duration, error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- w.Lock(context.Background()) }()
	time.Sleep(150 * time.Millisecond) // the waiter is polling
	select {
	case err := <-done:
		t.Fatalf("the waiter took a held lock: %v", err)
	default:
	}
	killed := time.Now()
	h.kill(t)
	select {
	case err := <-done:
		return time.Since(killed), err
	case <-time.After(30 * time.Second):
		t.Fatal("no takeover")
	}
	return 0, nil
}

// A holder that is SIGKILLed while it waits for its predecessor (whose
// session was ended and which is still alive) to notice the loss leaves
// that wait to the next holder: the next holder does not skip it because
// the crashed holder's process is visibly gone.
func TestSettleSurvivesCrashedSuccessor(t *testing.T) {
	needPG(t)
	name := lockName(t)
	a := newLocker(t, name)
	a.KeepAlive = 2 * time.Second
	c := admin(t)
	require.NoError(t, a.TryLock())

	cmd := helperCmd(t, "pglock-holder", "NAME="+name)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	time.Sleep(100 * time.Millisecond) // b is polling
	terminate(t, c, backendOf(t, c, name))
	// b takes over and waits up to 2s for a to notice; kill it meanwhile.
	require.Eventually(t, func() bool {
		pl, err := a.Holder()
		return err == nil && pl.PID == cmd.Process.Pid
	}, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, cmd.Process.Kill())
	cmd.Wait()

	w := newLocker(t, name)
	require.NoError(t, w.Lock(context.Background()))
	select {
	case <-a.Lost():
	default:
		t.Fatal("the new holder returned before the old one was told")
	}
}

// BenchmarkTakeoverAfterSIGKILL measures the time from SIGKILL of the
// holder process to a polling waiter holding the lock: ms/takeover (ns/op
// is the whole cycle: start a holder, let the waiter poll, kill, release).
func BenchmarkTakeoverAfterSIGKILL(b *testing.B) {
	needPG(b)
	name := lockName(b)
	w := newLocker(b, name)
	var total time.Duration
	for i := 0; i < b.N; i++ {
		took, err := takeover(b, startHolder(b, name), w)
		if err != nil {
			b.Fatal(err)
		}
		total += took
		if err := w.Unlock(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/takeover")
}
