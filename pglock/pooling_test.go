//go:build unix

package pglock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock"
	"github.com/ad5dec64/instancelock/internal/proctest"
	"github.com/stretchr/testify/require"
)

func init() {
	helpers["pglock-trylock"] = helperTryLock
}

// helperTryLock connects to DSN, tries the lock NAME once and prints
// "held <token>", "pooler <error>", "busy <error>" or "err <error>"; then
// it waits to be killed.
func helperTryLock() {
	l, err := New(os.Getenv("DSN"), os.Getenv("NAME"))
	if err == nil {
		err = l.TryLock()
	}
	tok, _ := l.FencingToken()
	msg := ""
	if err != nil {
		msg = strings.ReplaceAll(err.Error(), "\n", " ")
	}
	switch {
	case err == nil:
		fmt.Println("held", tok)
	case errors.Is(err, ErrTransactionPooler):
		fmt.Println("pooler", msg)
	case errors.Is(err, instancelock.ErrAlreadyRunning):
		fmt.Println("busy", msg)
	default:
		fmt.Println("err", msg)
	}
	time.Sleep(time.Hour) // until killed
}

// Stock PgBouncer in session mode (no ignore_startup_parameters): the lock
// works through it, a second client is refused and names the holder, and a
// holder that is SIGKILLed leaves nothing held: PgBouncer's DISCARD ALL
// frees the lock before the server connection goes back to the pool, and a
// waiter through the same pooler takes over.
func TestSessionPooler(t *testing.T) {
	dsn := bouncerDSN(t, "session")
	name := lockName(t)
	a, err := New(dsn, name)
	require.NoError(t, err)
	a.Port = 3000
	t.Cleanup(func() { a.Unlock() })
	require.NoError(t, a.TryLock(), "through PgBouncer in session mode")
	h, err := newLocker(t, name).Holder()
	require.NoError(t, err, "the lock is held on the real server")
	require.Equal(t, a.InstanceID(), h.InstanceID)

	b, err := New(dsn, name)
	require.NoError(t, err)
	t.Cleanup(func() { b.Unlock() })
	err = b.TryLock()
	require.ErrorIs(t, err, instancelock.ErrAlreadyRunning)
	require.NotErrorIs(t, err, ErrTransactionPooler)
	require.NoError(t, a.Unlock())
	require.NoError(t, b.TryLock())
	require.NoError(t, b.Unlock())

	// A holder process through the pooler is SIGKILLed.
	cmd := helperCmd(t, "pglock-trylock", "DSN="+dsn, "NAME="+name)
	out := proctest.NewLines(t, cmd)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line := out.Next(30 * time.Second)
	require.True(t, strings.HasPrefix(line, "held "), line)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.Lock(ctx) }()
	require.NoError(t, cmd.Process.Kill())
	cmd.Wait()
	require.NoError(t, <-done, "a waiter through the pooler takes over after the holder's SIGKILL")
	require.NoError(t, b.Unlock())
}

// Transaction and statement pooling: two processes try the lock through a
// real PgBouncer. PgBouncer hands both clients the same server session,
// where advisory locks are re-entrant, so without detection both would
// hold it (and after a SIGKILL the lock would stay on the pooled server
// connection). At most one may hold it, and the pooler must be detected:
// here, with one client at a time, both refuse with ErrTransactionPooler.
// After both are SIGKILLed no server session holds the lock.
func TestTransactionPoolerIsRefused(t *testing.T) {
	c := admin(t)
	for _, mode := range []string{"transaction", "statement"} {
		t.Run(mode, func(t *testing.T) {
			dsn := bouncerDSN(t, mode)
			name := lockName(t)
			var held, refused int
			var procs []*exec.Cmd
			defer func() {
				for _, cmd := range procs {
					cmd.Process.Kill()
					cmd.Wait()
				}
			}()
			for range 2 {
				cmd := helperCmd(t, "pglock-trylock", "DSN="+dsn, "NAME="+name)
				out := proctest.NewLines(t, cmd)
				require.NoError(t, cmd.Start())
				procs = append(procs, cmd)
				line := out.Next(30 * time.Second)
				t.Logf("%s pooling: %s", mode, line)
				switch {
				case strings.HasPrefix(line, "held "):
					held++
				case strings.HasPrefix(line, "pooler "):
					require.Contains(t, line, "pool_mode=transaction", "the error says what to do")
					refused++
				case strings.HasPrefix(line, "busy "):
				default:
					t.Fatalf("want the lock, ErrAlreadyRunning or ErrTransactionPooler: %s", line)
				}
			}
			require.LessOrEqual(t, held, 1, "two holders through a %s pooler", mode)
			require.Equal(t, 2, refused, "both processes detect the %s pooler", mode)
			// SIGKILL both: no session of the real server (a pooled server
			// connection included) holds the lock.
			for _, cmd := range procs {
				require.NoError(t, cmd.Process.Kill())
				cmd.Wait()
			}
			procs = nil
			require.Zero(t, backendOf(t, c, name), "the lock is held by a server connection of the pool")

			// In-process: TryLock and Lock refuse and hold nothing.
			l, err := New(dsn, name)
			require.NoError(t, err)
			require.ErrorIs(t, l.TryLock(), ErrTransactionPooler)
			err = l.Lock(context.Background())
			require.ErrorIs(t, err, ErrTransactionPooler)
			require.NotErrorIs(t, err, instancelock.ErrAlreadyRunning)
			require.ErrorIs(t, l.Err(), instancelock.ErrNotHeld)
			require.Nil(t, l.Lost())
		})
	}
}
