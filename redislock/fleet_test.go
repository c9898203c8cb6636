//go:build unix

package redislock

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
	"syscall"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock"
	"github.com/ad5dec64/instancelock/internal/proctest"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func init() {
	helpers["fleet-contender"] = helperContender
	helpers["fleet-waiter"] = helperWaiter
	helpers["fleet-holder"] = helperHolder
}

// helperLocker opens the Locker a helper uses: REDISLOCK_URL, LOCK_NAME,
// TTL (a duration).
func helperLocker() (*Locker, error) {
	ttl, err := time.ParseDuration(os.Getenv("TTL"))
	if err != nil {
		return nil, err
	}
	l, err := Open(os.Getenv("REDISLOCK_URL"), os.Getenv("LOCK_NAME"))
	if err != nil {
		return nil, err
	}
	l.TTL = ttl
	return l, nil
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", " ") }

// helperContender is one of the fleet test's processes. It obeys lines on
// stdin:
//
//	go R       print "ready R", wait at the barrier (a shared flock the
//	           parent holds exclusively), then TryLock once and print
//	           "won R <fence>" or "lost R <holder pid>" (or "err R <error>")
//	release R  if it holds the lock: append "exit <pid> <fence>" to the
//	           ledger, Unlock, print "released R"
//
// A winner appends "enter <pid> <fence>" to the ledger as soon as it holds
// the lock; the ledger is opened O_APPEND so lines from processes never mix.
func helperContender() {
	l, err := helperLocker()
	if err != nil {
		fmt.Println("err 0", oneLine(err))
		return
	}
	defer l.Close()
	ledger, err := os.OpenFile(os.Getenv("LEDGER"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		fmt.Println("err 0", oneLine(err))
		return
	}
	pid := os.Getpid()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		verb, round, _ := strings.Cut(in.Text(), " ")
		switch verb {
		case "go":
			if err := proctest.WaitBarrier(os.Getenv("BARRIER"), func() { fmt.Println("ready", round) }); err != nil {
				fmt.Println("err", round, oneLine(err))
				continue
			}
			err := l.TryLock()
			var are *instancelock.AlreadyRunningError
			switch {
			case err == nil:
				f, _ := l.FencingToken()
				fmt.Fprintf(ledger, "enter %d %d\n", pid, f)
				fmt.Println("won", round, f)
			case errors.As(err, &are):
				fmt.Println("lost", round, are.Holder.PID)
			default:
				fmt.Println("err", round, oneLine(err))
			}
		case "release":
			if f, held := l.FencingToken(); held {
				fmt.Fprintf(ledger, "exit %d %d\n", pid, f)
				l.Unlock()
			}
			fmt.Println("released", round)
		}
	}
}

// helperWaiter takes the lock TIMES times with Lock, holds it for HOLD each
// time, and writes "enter"/"exit" lines to the ledger; it prints "done" or
// "err <error>".
func helperWaiter() {
	l, err := helperLocker()
	if err != nil {
		fmt.Println("err", oneLine(err))
		return
	}
	defer l.Close()
	ledger, err := os.OpenFile(os.Getenv("LEDGER"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		fmt.Println("err", oneLine(err))
		return
	}
	times, _ := strconv.Atoi(os.Getenv("TIMES"))
	hold, _ := time.ParseDuration(os.Getenv("HOLD"))
	pid := os.Getpid()
	for range times {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := l.Lock(ctx)
		cancel()
		if err != nil {
			fmt.Println("err", oneLine(err))
			return
		}
		f, _ := l.FencingToken()
		fmt.Fprintf(ledger, "enter %d %d\n", pid, f)
		time.Sleep(hold)
		if err := l.Err(); err != nil {
			fmt.Println("err", oneLine(err))
			return
		}
		fmt.Fprintf(ledger, "exit %d %d\n", pid, f)
		if err := l.Unlock(); err != nil {
			fmt.Println("err", oneLine(err))
			return
		}
	}
	fmt.Println("done")
}

// helperHolder takes the lock, prints "held <fence>", then prints
// "lost <error>" when it loses it; on "unlock" from stdin it unlocks and
// prints "unlocked".
func helperHolder() {
	l, err := helperLocker()
	if err != nil {
		fmt.Println("err", oneLine(err))
		return
	}
	defer l.Close()
	if err := l.TryLock(); err != nil {
		fmt.Println("err", oneLine(err))
		return
	}
	f, _ := l.FencingToken()
	fmt.Println("held", f)
	cmds := make(chan string)
	go func() {
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			cmds <- in.Text()
		}
		close(cmds)
	}()
	lost := l.Lost()
	for {
		select {
		case <-lost:
			lost = nil
			fmt.Println("lost", oneLine(l.Err()))
		case c, ok := <-cmds:
			if !ok {
				return
			}
			if c == "unlock" {
				fmt.Println("unlocked", l.Unlock())
			}
		}
	}
}

// checkLedger checks that tenures never overlap and that fencing tokens
// grow from one tenure to the next. It returns the number of tenures.
func checkLedger(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	holding, tenures := "", 0
	var last uint64
	for i, line := range lines {
		f := strings.Fields(line)
		require.Len(t, f, 3, "ledger line %d: %q", i, line)
		switch f[0] {
		case "enter":
			require.Empty(t, holding, "ledger line %d: %q while %q held the lock", i, line, holding)
			holding = f[1] + " " + f[2]
			fence, err := strconv.ParseUint(f[2], 10, 64)
			require.NoError(t, err)
			require.Greater(t, fence, last, "ledger line %d: fencing token did not grow", i)
			last = fence
			tenures++
		case "exit":
			require.Equal(t, holding, f[1]+" "+f[2], "ledger line %d", i)
			holding = ""
		}
	}
	require.Empty(t, holding, "the last tenure did not end")
	return tenures
}

// Exactly one holder, always: 16 processes released at the same instant
// try the lock, over many rounds. Exactly one wins each round, every loser
// names the winner, the key names the winner, fencing tokens grow from
// round to round, and the ledger of tenures never overlaps.
func TestFleetExactlyOneHolder(t *testing.T) {
	needServer(t)
	procs, rounds := 16, 200
	if testing.Short() {
		procs, rounds = 8, 15
	}
	dir := t.TempDir()
	barrier := filepath.Join(dir, "barrier")
	bar := proctest.NewBarrier(t, barrier)
	ledger := filepath.Join(dir, "ledger")
	require.NoError(t, os.WriteFile(ledger, nil, 0o644))
	name := t.Name()
	observer := open(t, name)

	type contender struct {
		in  io.Writer
		out *proctest.Lines
		pid int
	}
	cs := make([]*contender, procs)
	for i := range cs {
		cmd := helperCmd(t, "fleet-contender", "LOCK_NAME="+name, "TTL=10s", "BARRIER="+barrier, "LEDGER="+ledger)
		in, out := proctest.Start(t, cmd)
		cs[i] = &contender{in: in, out: out, pid: cmd.Process.Pid}
	}

	start := time.Now()
	var last uint64
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
			f := strings.Fields(line)
			switch {
			case len(f) == 3 && f[0] == "won" && f[1] == strconv.Itoa(r):
				winners = append(winners, c.pid)
				fence, err := strconv.ParseUint(f[2], 10, 64)
				require.NoError(t, err)
				require.Greater(t, fence, last, "round %d: fencing token did not grow", r)
				last = fence
			case len(f) == 3 && f[0] == "lost" && f[1] == strconv.Itoa(r):
				losers = append(losers, f[2])
			default:
				t.Fatalf("round %d: contender %d: %s", r, c.pid, line)
			}
		}
		require.Len(t, winners, 1, "round %d: winners %v", r, winners)
		for _, l := range losers {
			require.Equal(t, strconv.Itoa(winners[0]), l, "round %d: a loser names another holder", r)
		}
		h, err := observer.Holder()
		require.NoError(t, err)
		require.Equal(t, winners[0], h.PID, "round %d: the key names the winner", r)
		for _, c := range cs {
			fmt.Fprintf(c.in, "release %d\n", r)
		}
		for _, c := range cs {
			require.Equal(t, fmt.Sprintf("released %d", r), c.out.Next(30*time.Second))
		}
	}
	require.Equal(t, rounds, checkLedger(t, ledger))
	t.Logf("%d processes × %d rounds in %v: one winner each round", procs, rounds, time.Since(start).Round(time.Millisecond))
}

// 16 processes each wait for the lock with Lock several times and hold it
// for a moment: the tenures recorded in the ledger never overlap, and the
// fencing tokens grow in the order of the tenures.
func TestFleetLockQueue(t *testing.T) {
	needServer(t)
	procs, times := 16, 4
	if testing.Short() {
		procs, times = 8, 2
	}
	ledger := filepath.Join(t.TempDir(), "ledger")
	require.NoError(t, os.WriteFile(ledger, nil, 0o644))
	name := t.Name()
	start := time.Now()
	var outs []*proctest.Lines
	for range procs {
		cmd := helperCmd(t, "fleet-waiter", "LOCK_NAME="+name, "TTL=2s", "LEDGER="+ledger,
			"TIMES="+strconv.Itoa(times), "HOLD=10ms")
		outs = append(outs, proctest.NewLines(t, cmd))
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	}
	for _, out := range outs {
		require.Equal(t, "done", out.Next(60*time.Second))
	}
	require.Equal(t, procs*times, checkLedger(t, ledger))
	t.Logf("%d processes took the lock %d times each with Lock in %v; no overlap", procs, times, time.Since(start).Round(time.Millisecond))
}

// startHolder starts a helper process that holds the lock, and returns it
// with its fencing token.
func startHolder(t *testing.T, name string, ttl time.Duration) (*exec.Cmd, *proctest.Lines, *os.File, uint64) {
	t.Helper()
	cmd := helperCmd(t, "fleet-holder", "LOCK_NAME="+name, "TTL="+ttl.String())
	w, err := cmd.StdinPipe()
	require.NoError(t, err)
	out := proctest.NewLines(t, cmd)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGCONT); cmd.Process.Kill(); cmd.Wait() })
	line := out.Next(30 * time.Second)
	f, ok := strings.CutPrefix(line, "held ")
	require.True(t, ok, line)
	fence, err := strconv.ParseUint(f, 10, 64)
	require.NoError(t, err)
	return cmd, out, w.(*os.File), fence
}

// The holder process is SIGKILLed: Redis cannot know, so the lock is free
// only when the key expires, within the TTL; a waiter then takes over with
// a greater fencing token. While the holder lived, its renewals kept the
// waiter out for many TTLs.
func TestFleetHolderKilled(t *testing.T) {
	needServer(t)
	checkNoLeak(t)
	name := t.Name()
	// 1 s: renewals every 333 ms keep the lease even on a loaded machine
	// running the race detector.
	ttl := time.Second
	holder, out, _, fa := startHolder(t, name, ttl)
	b := open(t, name)
	b.TTL = ttl

	res := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res <- b.Lock(ctx)
	}()
	select {
	case err := <-res:
		line, _ := out.Line(time.Second)
		t.Fatalf("the waiter got the lock while the holder lived: %v (the holder said %q)", err, line)
	case <-time.After(3 * ttl):
	}

	require.NoError(t, holder.Process.Kill())
	killed := time.Now()
	h, err := b.Holder()
	require.NoError(t, err, "the key outlives its holder until it expires")
	require.Equal(t, holder.Process.Pid, h.PID)
	require.NoError(t, <-res)
	took := time.Since(killed)
	t.Logf("holder SIGKILLed: a waiter took over after %v (TTL %v, renewed every %v)", took, ttl, ttl/3)
	fb, ok := b.FencingToken()
	require.True(t, ok)
	require.Greater(t, fb, fa)
	require.NoError(t, b.Unlock())
}

// The holder process is paused (SIGSTOP, like a long GC pause or a frozen
// VM) for longer than the TTL: its lease runs out, a waiter takes over with
// a greater fencing token — for a moment two processes believe they hold
// the lock, which is why the resource must check fencing tokens. When the
// paused holder continues, it is told at once, and its Unlock leaves the
// new holder's key alone.
func TestFleetHolderPaused(t *testing.T) {
	needServer(t)
	checkNoLeak(t)
	name := t.Name()
	ttl := 500 * time.Millisecond
	holder, out, in, fa := startHolder(t, name, ttl)
	b := open(t, name)
	b.TTL = ttl

	require.NoError(t, holder.Process.Signal(syscall.SIGSTOP))
	paused := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, b.Lock(ctx))
	t.Logf("holder paused: a waiter took over after %v (TTL %v)", time.Since(paused), ttl)
	fb, _ := b.FencingToken()
	require.Greater(t, fb, fa, "the new holder's writes win over the paused one's")

	require.NoError(t, holder.Process.Signal(syscall.SIGCONT))
	resumed := time.Now()
	line := out.Next(10 * time.Second)
	t.Logf("paused holder continued and was told after %v: %s", time.Since(resumed), line)
	require.True(t, strings.HasPrefix(line, "lost "), line)
	require.Contains(t, line, "lost:")
	fmt.Fprintln(in, "unlock")
	require.Equal(t, "unlocked <nil>", out.Next(10*time.Second))
	h, err := b.Holder()
	require.NoError(t, err)
	require.Equal(t, b.InstanceID(), h.InstanceID)
	require.NoError(t, b.Err())
	require.NoError(t, b.Unlock())
}

func init() { helpers["fleet-worker"] = helperWorker }

// monotonic returns CLOCK_MONOTONIC in nanoseconds: one clock for the test
// and its helper processes.
func monotonic() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// helperWorker is the worker loop of a holder: it takes the lock, prints
// "held <fence>", then over and over reads the monotonic clock, checks Err
// and FencingToken and, while both say the lock is held, appends "ok
// <clock> <fence>" to LEDGER. When a check reports the loss it prints
// "lost <error>" and waits to be killed.
func helperWorker() {
	l, err := helperLocker()
	if err == nil {
		err = l.TryLock()
	}
	if err != nil {
		fmt.Println("err", oneLine(err))
		return
	}
	ledger, err := os.OpenFile(os.Getenv("LEDGER"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		fmt.Println("err", oneLine(err))
		return
	}
	f, _ := l.FencingToken()
	fmt.Println("held", f)
	for {
		now := monotonic()
		err := l.Err()
		f, ok := l.FencingToken()
		if err != nil || !ok {
			fmt.Println("lost", strings.ReplaceAll(fmt.Sprint(err), "\n", " "))
			time.Sleep(time.Hour)
		}
		fmt.Fprintf(ledger, "ok %d %d\n", now, f)
		time.Sleep(time.Millisecond)
	}
}

// A worker paused (SIGSTOP) past its TTL while a waiter takes over: when
// it resumes (SIGCONT) its very first check reports the loss. No check that
// began after SIGCONT may say the lock is held (the ledger of checks,
// stamped with CLOCK_MONOTONIC, shows it), whether or not the renewal timer
// has run by then.
func TestFleetResumedHolderIsToldAtItsFirstCheck(t *testing.T) {
	needServer(t)
	ttl := 300 * time.Millisecond
	for run := range 3 {
		name := fmt.Sprintf("%s-%d", t.Name(), run)
		ledger := filepath.Join(t.TempDir(), "ledger")
		require.NoError(t, os.WriteFile(ledger, nil, 0o644))
		cmd := helperCmd(t, "fleet-worker", "LOCK_NAME="+name, "TTL="+ttl.String(), "LEDGER="+ledger)
		out := proctest.NewLines(t, cmd)
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { cmd.Process.Signal(syscall.SIGCONT); cmd.Process.Kill(); cmd.Wait() })
		line := out.Next(30 * time.Second)
		oldFence, ok := strings.CutPrefix(line, "held ")
		require.True(t, ok, line)
		time.Sleep(50 * time.Millisecond) // it is checking and writing

		require.NoError(t, cmd.Process.Signal(syscall.SIGSTOP))
		w := open(t, name)
		w.TTL = ttl
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		require.NoError(t, w.Lock(ctx), "the waiter takes over once the paused holder's key expires")
		cancel()

		resumed := monotonic()
		require.NoError(t, cmd.Process.Signal(syscall.SIGCONT))
		line = out.Next(30 * time.Second)
		require.True(t, strings.HasPrefix(line, "lost "), line)
		require.Contains(t, line, "expired")

		data, err := os.ReadFile(ledger)
		require.NoError(t, err)
		var before, after int
		for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			fs := strings.Fields(l)
			require.Len(t, fs, 3, l)
			at, _ := strconv.ParseInt(fs[1], 10, 64)
			if at > resumed {
				after++
				continue
			}
			before++
			require.Equal(t, oldFence, fs[2])
		}
		require.Positive(t, before, "the worker wrote before the pause")
		require.Zero(t, after, "run %d: a check that began after SIGCONT said the lock was held", run)
		require.NoError(t, w.Unlock())
		cmd.Process.Kill()
		cmd.Wait()
	}
}
