//go:build unix

package pglock

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock"
	"github.com/ad5dec64/instancelock/internal/proctest"
	"github.com/ad5dec64/instancelock/internal/testserver"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func init() {
	helpers["pglock-worker"] = helperWorker
}

// monotonic returns CLOCK_MONOTONIC in nanoseconds: one clock for the test
// and its helper processes.
func monotonic() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// helperWorker is the worker loop of a holder: it takes the lock NAME
// (keep-alive KEEPALIVE), prints "held <token>", then over and over reads
// the monotonic clock, checks Err and FencingToken and, while both say the
// lock is held, appends "ok <clock> <token>" to LEDGER. When a check
// reports the loss it prints "lost <error>" and waits to be killed.
func helperWorker() {
	ka, _ := time.ParseDuration(os.Getenv("KEEPALIVE"))
	l, err := New(testDSN, os.Getenv("NAME"))
	if err == nil {
		l.KeepAlive = ka
	}
	if err == nil {
		err = l.Lock(context.Background())
	}
	if err != nil {
		fmt.Println("err", err)
		return
	}
	ledger, err := os.OpenFile(os.Getenv("LEDGER"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		fmt.Println("err", err)
		return
	}
	tok, _ := l.FencingToken()
	fmt.Println("held", tok)
	for {
		now := monotonic()
		err := l.Err()
		tok, ok := l.FencingToken()
		if err != nil || !ok {
			fmt.Println("lost", strings.ReplaceAll(fmt.Sprint(err), "\n", " "))
			time.Sleep(time.Hour)
		}
		fmt.Fprintf(ledger, "ok %d %d\n", now, tok)
		time.Sleep(time.Millisecond)
	}
}

// A holder paused (SIGSTOP) past its lease, whose session the server ends
// meanwhile, while a waiter takes over: when it resumes (SIGCONT) its very
// first check reports the loss. No check that began after SIGCONT may say
// the lock is held (the ledger of checks, stamped with CLOCK_MONOTONIC,
// shows it), whether or not the keep-alive has run by then.
func TestResumedHolderIsToldAtItsFirstCheck(t *testing.T) {
	needPG(t)
	for run := range 3 {
		name := lockName(t)
		ledger := filepath.Join(t.TempDir(), "ledger")
		require.NoError(t, os.WriteFile(ledger, nil, 0o644))
		cmd := helperCmd(t, "pglock-worker", "NAME="+name, "LEDGER="+ledger, "KEEPALIVE=300ms")
		out := proctest.NewLines(t, cmd)
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		line := out.Next(30 * time.Second)
		oldTok, ok := strings.CutPrefix(line, "held ")
		require.True(t, ok, line)
		time.Sleep(50 * time.Millisecond) // it is checking and writing

		require.NoError(t, cmd.Process.Signal(unix.SIGSTOP))
		c := admin(t)
		terminate(t, c, backendOf(t, c, name))
		w := newLocker(t, name)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		require.NoError(t, w.Lock(ctx), "the waiter takes over from the paused holder")
		cancel()
		newTok, _ := w.FencingToken()

		resumed := monotonic()
		require.NoError(t, cmd.Process.Signal(unix.SIGCONT))
		line = out.Next(30 * time.Second)
		require.True(t, strings.HasPrefix(line, "lost "), line)
		require.Contains(t, line, "lost")

		f, err := os.Open(ledger)
		require.NoError(t, err)
		sc := bufio.NewScanner(f)
		var before, after int
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			require.Len(t, fs, 3, sc.Text())
			at, _ := strconv.ParseInt(fs[1], 10, 64)
			if at > resumed {
				after++
				continue
			}
			before++
			require.Equal(t, oldTok, fs[2])
		}
		f.Close()
		require.Positive(t, before, "the worker wrote before the pause")
		require.Zero(t, after, "run %d: a check that began after SIGCONT said the lock was held (old token %s, new holder %d)", run, oldTok, newTok)
		require.NoError(t, w.Unlock())
		cmd.Process.Kill()
		cmd.Wait()
	}
}

// The server restarts while a holder holds the lock and a waiter waits in
// Lock: the holder is told of the loss, and the waiter rides out the
// outage (its connection breaks, it reconnects while the server refuses
// connections) and holds the lock once the server is back, with a greater
// token.
func TestLockRidesOutServerRestart(t *testing.T) {
	needPG(t)
	name := lockName(t)
	a := newLocker(t, name)
	a.KeepAlive = 300 * time.Millisecond
	b := newLocker(t, name)
	require.NoError(t, a.TryLock())
	tokA, _ := a.FencingToken()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.Lock(ctx) }()
	time.Sleep(200 * time.Millisecond) // b waits in pg_advisory_lock

	require.NoError(t, testSrv.Restart())
	select {
	case <-a.Lost():
	case <-time.After(30 * time.Second):
		t.Fatal("the holder was not told of the restart")
	}
	require.ErrorIs(t, a.Err(), instancelock.ErrLockLost)
	select {
	case err := <-done:
		require.NoError(t, err, "Lock rides out the restart")
	case <-time.After(60 * time.Second):
		t.Fatal("the waiter did not get the lock after the restart")
	}
	tokB, ok := b.FencingToken()
	require.True(t, ok)
	require.Greater(t, tokB, tokA)
	require.NoError(t, b.Unlock())
	require.NoError(t, a.Unlock())
}

// A server whose clock steps back an hour (libfaketime, read by the server
// at every call): a clean release needs no wait, and a takeover from a
// terminated session waits the old holder's keep-alive interval on the
// new holder's monotonic clock, not the server's. Before the fix each
// acquisition after a step back waited up to 60 s; the bounds here are
// liveness bounds (20 s), not speed figures.
func TestServerClockStepsBack(t *testing.T) {
	needPG(t)
	lib, err := testserver.Libfaketime()
	testserver.Need(t, err)
	f, err := os.CreateTemp("", "pglock-faketime-")
	require.NoError(t, err)
	t.Cleanup(func() { os.Remove(f.Name()) })
	f.Close()
	require.NoError(t, os.Chmod(f.Name(), 0o644))
	step := func(offset string) { require.NoError(t, os.WriteFile(f.Name(), []byte(offset+"\n"), 0o644)) }
	step("+0")
	srv, err := testserver.StartPostgres("LD_PRELOAD="+lib, "FAKETIME_TIMESTAMP_FILE="+f.Name(),
		"FAKETIME_NO_CACHE=1", "FAKETIME_DONT_FAKE_MONOTONIC=1")
	require.NoError(t, err)
	t.Cleanup(srv.Stop)

	serverBehind := func() time.Duration {
		l, err := New(srv.URL, "clock")
		require.NoError(t, err)
		c, err := l.connect(context.Background())
		require.NoError(t, err)
		defer l.closeConn(c)
		var now time.Time
		require.NoError(t, c.QueryRow(context.Background(), "SELECT clock_timestamp()").Scan(&now))
		return time.Since(now)
	}
	require.Less(t, serverBehind(), time.Minute, "the server's clock starts right")

	name := lockName(t)
	lk := func() *Locker {
		l, err := New(srv.URL, name)
		require.NoError(t, err)
		l.KeepAlive = 300 * time.Millisecond
		t.Cleanup(func() { l.Unlock() })
		return l
	}
	a, b := lk(), lk()
	acquire := func(l *Locker, what string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		require.NoError(t, l.Lock(ctx), what)
	}
	acquire(a, "before the step")
	require.NoError(t, a.Unlock())

	step("-1h")
	require.Greater(t, serverBehind(), 59*time.Minute, "the server's clock stepped back an hour")
	for i := range 3 {
		acquire(b, fmt.Sprintf("clean release %d after the step back", i))
		require.NoError(t, b.Unlock())
	}
	// A terminated session: the next holder waits the old holder's
	// keep-alive, and returns after the old holder was told.
	acquire(a, "a holds again")
	direct, err := New(srv.URL, "admin")
	require.NoError(t, err)
	ac, err := direct.connect(context.Background())
	require.NoError(t, err)
	defer direct.closeConn(ac)
	var pid int32
	require.NoError(t, ac.QueryRow(context.Background(), `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1`, a.classID, a.objID).Scan(&pid))
	var ok bool
	require.NoError(t, ac.QueryRow(context.Background(), `SELECT pg_terminate_backend($1)`, pid).Scan(&ok))
	require.True(t, ok)
	acquire(b, "takeover after a terminated session, clock stepped back")
	select {
	case <-a.Lost():
	default:
		t.Fatal("the new holder returned before the old one was told")
	}
	require.NoError(t, a.Unlock(), "Unlock of the lost lock")
	require.NoError(t, b.Unlock())

	step("+0") // and forward again
	require.Less(t, serverBehind(), time.Minute)
	acquire(a, "clean release after the step forward")
	require.NoError(t, a.Unlock())
}
