package pglock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock"
	"github.com/ad5dec64/instancelock/internal/testserver"
	"github.com/stretchr/testify/require"
)

var (
	_ instancelock.Mutex  = (*Locker)(nil)
	_ instancelock.Fencer = (*Locker)(nil)
)

func TestNewRejectsBadInput(t *testing.T) {
	for _, tc := range []struct{ name, dsn, lock string }{
		{"empty name", "postgres://localhost/x", ""},
		{"bad connection string", "postgres://%zz", "n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := New(tc.dsn, tc.lock)
			require.Error(t, err)
			require.Nil(t, l)
		})
	}
	l, err := New("postgres://localhost/x", "n")
	require.NoError(t, err)
	require.Equal(t, "n", l.Name())
	require.NotEmpty(t, l.InstanceID())
}

// A field out of range is refused by the first TryLock and Lock, with an
// error that names the field, before anything is connected (nothing
// listens at the address); the error stays. Holder, which uses none of
// them, goes on to connect.
func TestFieldsOutOfRange(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*Locker)
		want string
	}{
		{"port -1", func(l *Locker) { l.Port = -1 }, "Locker.Port is -1: want 1..65535, or 0 for none"},
		{"port 65536", func(l *Locker) { l.Port = 65536 }, "Locker.Port is 65536"},
		{"keep-alive 1ms", func(l *Locker) { l.KeepAlive = time.Millisecond }, "Locker.KeepAlive is 1ms: want at least 10ms, or 0 for 1s"},
		{"keep-alive negative", func(l *Locker) { l.KeepAlive = -time.Second }, "Locker.KeepAlive is -1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := New("postgres://postgres@127.0.0.1:1/x?connect_timeout=1", "n")
			require.NoError(t, err)
			tc.set(l)
			err = l.TryLock()
			require.ErrorContains(t, err, tc.want)
			require.ErrorContains(t, l.Lock(context.Background()), tc.want, "Lock fails at once, without retrying")
			require.ErrorContains(t, l.TryLock(), tc.want, "the error stays")
			require.ErrorIs(t, l.Err(), instancelock.ErrNotHeld)
			require.NoError(t, l.Unlock())
			_, err = l.Holder()
			require.Error(t, err, "nothing listens at 127.0.0.1:1")
			require.NotContains(t, err.Error(), "Locker.")
		})
	}
}

// The zero Locker and zero fields: a Locker not made by New fails with an
// error that says how to make one, and never panics; zero fields are the
// defaults (1 s keep-alive, 10 s timeout, silent, no port).
func TestZeroValues(t *testing.T) {
	var z Locker
	for _, err := range []error{z.TryLock(), z.Lock(context.Background())} {
		require.ErrorContains(t, err, "use pglock.New(connString, name)")
	}
	_, err := z.Holder()
	require.ErrorContains(t, err, "use pglock.New(connString, name)")
	require.ErrorIs(t, z.Err(), instancelock.ErrNotHeld)
	require.Nil(t, z.Lost())
	_, ok := z.FencingToken()
	require.False(t, ok)
	require.NoError(t, z.Unlock())

	l, err := New("postgres://localhost/x", "n")
	require.NoError(t, err)
	require.NoError(t, l.setup())
	require.Equal(t, time.Second, l.keepAlive)
	require.Equal(t, 10*time.Second, l.timeout)
	require.Equal(t, 0, l.port)
	require.NotNil(t, l.log)

	l, err = New("postgres://localhost/x", "n")
	require.NoError(t, err)
	l.Timeout = -1
	require.NoError(t, l.setup())
	ctx, cancel := l.bounded(context.Background())
	defer cancel()
	_, bounded := ctx.Deadline()
	require.False(t, bounded, "a negative Timeout is no limit")
}

// The key is part of the protocol between versions of this package in one
// fleet: it must never change.
func TestKeyIsStable(t *testing.T) {
	require.Equal(t, int64(1240578411992124563), Key("orchestrator"))
	require.Equal(t, int64(-2039914840885289964), Key(""))
	require.NotEqual(t, Key("a"), Key("b"))
}

// A Locker that holds nothing: Unlock is a no-op, Err says ErrNotHeld, no
// channel, no token; an unreachable server is an error that is not
// ErrAlreadyRunning, and leaves nothing held.
func TestNotHeld(t *testing.T) {
	port, err := testserver.FreePort() // nothing listens there
	require.NoError(t, err)
	l, err := New(fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=5", port), "n")
	require.NoError(t, err)
	require.NoError(t, l.Unlock())
	require.NoError(t, l.Unlock())
	require.ErrorIs(t, l.Err(), instancelock.ErrNotHeld)
	require.Nil(t, l.Lost())
	_, ok := l.FencingToken()
	require.False(t, ok)

	err = l.TryLock()
	require.Error(t, err)
	require.NotErrorIs(t, err, instancelock.ErrAlreadyRunning)
	require.ErrorIs(t, l.Err(), instancelock.ErrNotHeld)
	// Lock keeps trying an unreachable server until its context ends, and
	// then says why it could not get the lock.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err = l.Lock(ctx)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "connect")
	require.NotErrorIs(t, err, instancelock.ErrAlreadyRunning)
	require.ErrorIs(t, l.Err(), instancelock.ErrNotHeld)
	_, err = l.Holder()
	require.Error(t, err)
	require.NotErrorIs(t, err, instancelock.ErrNotRunning)
}

// The whole life of a holding, seen by the holder and by a contender.
func TestLifecycle(t *testing.T) {
	needPG(t)
	checkNoGoroutineLeak(t)
	name := lockName(t)
	a := newLocker(t, name)
	a.Port = 3000
	b := newLocker(t, name)

	_, err := a.Holder()
	require.ErrorIs(t, err, instancelock.ErrNotRunning, "nobody holds it yet")

	require.NoError(t, a.TryLock())
	require.NoError(t, a.Err())
	require.NotNil(t, a.Lost())
	select {
	case <-a.Lost():
		t.Fatal("Lost closed while held")
	default:
	}
	tokA, ok := a.FencingToken()
	require.True(t, ok)
	require.Positive(t, tokA)

	err = a.TryLock()
	require.ErrorIs(t, err, instancelock.ErrAlreadyHeld, "a second TryLock on a held Locker")
	require.NotErrorIs(t, err, instancelock.ErrAlreadyRunning)

	// The contender is refused and told who holds the lock.
	err = b.TryLock()
	require.ErrorIs(t, err, instancelock.ErrAlreadyRunning)
	var are *instancelock.AlreadyRunningError
	require.ErrorAs(t, err, &are)
	require.Equal(t, fmt.Sprintf("postgres lock %q", name), are.Path)
	require.Equal(t, os.Getpid(), are.Holder.PID)
	require.Equal(t, a.InstanceID(), are.Holder.InstanceID)
	require.Equal(t, 3000, are.Holder.Port)
	host, _ := os.Hostname()
	require.Equal(t, host, are.Holder.Hostname)
	require.ErrorIs(t, b.Err(), instancelock.ErrNotHeld)
	require.Nil(t, b.Lost())

	for _, l := range []*Locker{a, b} {
		h, err := l.Holder()
		require.NoError(t, err)
		require.Equal(t, a.InstanceID(), h.InstanceID)
		require.Equal(t, os.Getpid(), h.PID)
		require.NoError(t, h.Validate())
	}

	lost := a.Lost()
	require.NoError(t, a.Unlock())
	require.NoError(t, a.Unlock(), "Unlock is idempotent")
	require.ErrorIs(t, a.Err(), instancelock.ErrNotHeld)
	require.Nil(t, a.Lost())
	_, ok = a.FencingToken()
	require.False(t, ok)
	select {
	case <-lost:
		t.Fatal("Unlock closed the Lost channel")
	default:
	}
	_, err = b.Holder()
	require.ErrorIs(t, err, instancelock.ErrNotRunning, "the row is left, but nobody holds the lock")
	var released bool
	require.NoError(t, admin(t).QueryRow(context.Background(), "SELECT released FROM "+Table+" WHERE name = $1", name).Scan(&released))
	require.True(t, released, "Unlock marks the row released, so the next holder does not wait")

	require.NoError(t, b.TryLock(), "released: the contender gets it at once")
	tokB, ok := b.FencingToken()
	require.True(t, ok)
	require.Greater(t, tokB, tokA)
	h, err := a.Holder()
	require.NoError(t, err)
	require.Equal(t, b.InstanceID(), h.InstanceID)
	require.NoError(t, b.Unlock())
}

// Tokens grow with every holder, whichever Locker it is.
func TestFencingTokensStrictlyIncrease(t *testing.T) {
	name := lockName(t)
	ls := []*Locker{newLocker(t, name), newLocker(t, name), newLocker(t, name)}
	var last uint64
	for i := range 12 {
		l := ls[i%len(ls)]
		require.NoError(t, l.TryLock())
		tok, ok := l.FencingToken()
		require.True(t, ok)
		require.Greater(t, tok, last, "acquisition %d", i)
		last = tok
		require.NoError(t, l.Unlock())
	}
}

// Lock waits while another holds the lock, returns the context's cause
// with the holder when it gives up, and takes the lock when it is
// released.
func TestLockWaitsUntilReleased(t *testing.T) {
	needPG(t)
	checkNoGoroutineLeak(t)
	name := lockName(t)
	a := newLocker(t, name)
	b := newLocker(t, name)
	require.NoError(t, a.TryLock())

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err := b.Lock(ctx)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorIs(t, err, instancelock.ErrAlreadyRunning)
	var are *instancelock.AlreadyRunningError
	require.ErrorAs(t, err, &are)
	require.Equal(t, a.InstanceID(), are.Holder.InstanceID)

	cause := errors.New("shutting down")
	ctx, cancelCause := context.WithCancelCause(context.Background())
	go func() { time.Sleep(100 * time.Millisecond); cancelCause(cause) }()
	require.ErrorIs(t, b.Lock(ctx), cause)

	done := make(chan error, 1)
	go func() { done <- b.Lock(context.Background()) }()
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Lock returned while the lock was held: %v", err)
	default:
	}
	require.NoError(t, a.Unlock())
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Lock did not take the released lock")
	}
	require.NoError(t, b.Err())
	require.NoError(t, b.Unlock())
}

// The server ends the holder's session: the holder is told within the
// keep-alive interval, Holder at once reports nobody (the row is left but
// the lock is not held), and a waiter becomes the holder only after the
// old holder was told.
func TestTerminatedSessionIsReportedBeforeTakeover(t *testing.T) {
	needPG(t)
	const keepAlive = 500 * time.Millisecond
	name := lockName(t)
	a := newLocker(t, name)
	a.KeepAlive = keepAlive
	b := newLocker(t, name)
	b.KeepAlive = keepAlive
	c := admin(t)
	require.NoError(t, a.TryLock())
	tokA, _ := a.FencingToken()

	var mu sync.Mutex
	var events []string
	note := func(e string) { mu.Lock(); events = append(events, e); mu.Unlock() }
	lostAt := make(chan time.Time, 1)
	go func() { <-a.Lost(); note("a lost"); lostAt <- time.Now() }()
	acquired := make(chan error, 1)
	go func() { err := b.Lock(context.Background()); note("b acquired"); acquired <- err }()
	time.Sleep(100 * time.Millisecond) // b is polling

	pid := backendOf(t, c, name)
	require.NotZero(t, pid)
	terminated := time.Now()
	terminate(t, c, pid)

	var took time.Duration
	select {
	case at := <-lostAt:
		took = at.Sub(terminated)
	case <-time.After(10 * time.Second):
		t.Fatal("the holder was not told")
	}
	t.Logf("holder told %v after pg_terminate_backend (keep-alive interval %v)", took.Round(time.Millisecond), keepAlive)
	err := a.Err()
	require.ErrorIs(t, err, instancelock.ErrLockLost)
	require.Contains(t, err.Error(), "terminating connection")
	_, ok := a.FencingToken()
	require.False(t, ok)

	select {
	case err := <-acquired:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter did not take over")
	}
	mu.Lock()
	require.Equal(t, []string{"a lost", "b acquired"}, events)
	mu.Unlock()
	tokB, ok := b.FencingToken()
	require.True(t, ok)
	require.Greater(t, tokB, tokA)

	require.NoError(t, a.Unlock(), "Unlock of a lost lock")
	require.ErrorIs(t, a.Err(), instancelock.ErrLockLost, "the loss stays reported after Unlock")
	require.NoError(t, b.Unlock())
}

// A row left by a session that is gone does not make a holder.
func TestHolderIgnoresRowOfEndedSession(t *testing.T) {
	name := lockName(t)
	a := newLocker(t, name)
	c := admin(t)
	require.NoError(t, a.TryLock())
	terminate(t, c, backendOf(t, c, name))
	require.Eventually(t, func() bool { return backendOf(t, c, name) == 0 }, 10*time.Second, 5*time.Millisecond)
	_, err := newLocker(t, name).Holder()
	require.ErrorIs(t, err, instancelock.ErrNotRunning)
}

// A session that is not a Locker holds the key: contenders are refused and
// say they cannot name the holder; Holder says who holds it but not that
// nobody does.
func TestForeignSessionHoldsTheKey(t *testing.T) {
	name := lockName(t)
	c := admin(t)
	var got bool
	require.NoError(t, c.QueryRow(context.Background(), "SELECT pg_try_advisory_lock($1)", Key(name)).Scan(&got))
	require.True(t, got)
	var pid int32
	require.NoError(t, c.QueryRow(context.Background(), "SELECT pg_backend_pid()").Scan(&pid))

	l := newLocker(t, name)
	err := l.TryLock()
	var are *instancelock.AlreadyRunningError
	require.ErrorAs(t, err, &are)
	require.Zero(t, are.Holder.PID)
	require.Contains(t, are.Reason, fmt.Sprint(pid))
	_, err = l.Holder()
	require.Error(t, err)
	require.NotErrorIs(t, err, instancelock.ErrNotRunning)
	require.Contains(t, err.Error(), fmt.Sprint(pid))

	require.NoError(t, c.QueryRow(context.Background(), "SELECT pg_advisory_unlock($1)", Key(name)).Scan(&got))
	require.True(t, got)
	require.NoError(t, l.TryLock())
	require.NoError(t, l.Unlock())
}

// Sessions racing to create the metadata table all succeed.
func TestConcurrentTableCreation(t *testing.T) {
	c := admin(t)
	_, err := c.Exec(context.Background(), "DROP TABLE IF EXISTS "+Table)
	require.NoError(t, err)
	base := lockName(t)
	const n = 8
	ls := make([]*Locker, n)
	for i := range ls {
		ls[i] = newLocker(t, fmt.Sprintf("%s-%d", base, i))
	}
	_, err = ls[0].Holder()
	require.ErrorIs(t, err, instancelock.ErrNotRunning, "no table yet")
	start := make(chan struct{})
	errs := make(chan error, n)
	for _, l := range ls {
		go func() { <-start; errs <- l.TryLock() }()
	}
	close(start)
	for range n {
		require.NoError(t, <-errs)
	}
	for i, l := range ls {
		h, err := l.Holder()
		require.NoError(t, err, "locker %d", i)
		require.Equal(t, l.InstanceID(), h.InstanceID)
		require.NoError(t, l.Unlock())
	}
}

// A holder that gives up while it waits for its predecessor to notice the
// loss does not shorten that wait for the next holder: a row whose wait
// was not over makes the next holder wait all of it again (the time that
// passed is not known without comparing clocks). a's keep-alive (3 s) is
// far longer than b's, so the next holder must still be waiting when b's
// own, shorter rules would have let it go; and it returns only after a was
// told.
func TestSettleTimeIsRespected(t *testing.T) {
	needPG(t)
	name := lockName(t)
	a := newLocker(t, name)
	a.KeepAlive = 3 * time.Second
	b := newLocker(t, name)
	b.KeepAlive = 100 * time.Millisecond
	c := admin(t)
	require.NoError(t, a.TryLock())
	terminate(t, c, backendOf(t, c, name))

	require.Eventually(t, func() bool { return backendOf(t, c, name) == 0 }, 10*time.Second, 5*time.Millisecond)
	// b takes over and waits a's interval; it gives up early (its context
	// ends), leaving its row behind with the wait not over.
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	err := b.Lock(ctx)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "waiting for the previous holder")
	var settleMS int64
	var settled bool
	require.NoError(t, c.QueryRow(context.Background(), "SELECT settle_ms, settled FROM "+Table+" WHERE name = $1", name).Scan(&settleMS, &settled))
	require.Equal(t, int64(3000), settleMS)
	require.False(t, settled)

	require.NoError(t, b.Lock(context.Background()))
	select {
	case <-a.Lost():
	default:
		t.Fatal("the new holder returned before the old one was told")
	}
	require.NoError(t, c.QueryRow(context.Background(), "SELECT settled FROM "+Table+" WHERE name = $1", name).Scan(&settled))
	require.True(t, settled)
}

func BenchmarkTryLockUnlock(b *testing.B) {
	l := newLocker(b, lockName(b))
	for b.Loop() {
		if err := l.TryLock(); err != nil {
			b.Fatal(err)
		}
		if err := l.Unlock(); err != nil {
			b.Fatal(err)
		}
	}
}
