package instancelocktest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"

	"github.com/ad5dec64/instancelock"
	"github.com/ad5dec64/instancelock/instancelocktest"
)

// serve is the part of a program's main that its tests drive: it takes
// the instance lock, registers its shutdown hooks, reports running, and
// returns the exit code once the shutdown is over. main passes the real
// lock (instancelock.Acquire's *Locker, or a fleet lock); tests pass an
// instancelocktest.Mutex. started lets the test reach the shutdown helper.
func serve(lk instancelock.Mutex, out io.Writer, started func(*instancelock.GracefulShutdown)) int {
	if err := lk.TryLock(); err != nil {
		if errors.Is(err, instancelock.ErrAlreadyRunning) {
			fmt.Fprintln(out, "another instance is running; not starting")
		} else {
			fmt.Fprintln(out, "cannot take the lock:", err)
		}
		return 1
	}
	g := instancelock.NewGracefulShutdown(lk)
	g.Add("workers", func(context.Context) error {
		fmt.Fprintln(out, "workers stopped")
		return nil
	})
	if err := g.Start(context.Background()); err != nil {
		g.Shutdown(err)
		return g.ExitCode()
	}
	g.State().Set(instancelock.StatusRunning)
	started(g)
	return g.ExitCode()
}

// A test of serve: a signal stops it cleanly (exit 0), without a signal
// being sent to the test process.
func Example_signal() {
	lk := instancelocktest.NewMutex()
	code := serve(lk, os.Stdout, func(g *instancelock.GracefulShutdown) {
		if err := instancelocktest.Signal(g, os.Interrupt); err != nil {
			fmt.Println(err) // the real process would have been killed
		}
	})
	fmt.Println("exit code:", code, "lock released:", lk.Err() == instancelock.ErrNotHeld)
	// Output:
	// workers stopped
	// exit code: 0 lock released: true
}

// A test of serve: losing the lock (a deleted PID file, an expired lease)
// stops it with exit code 1, so that a supervisor restarts it.
func Example_lostLock() {
	lk := instancelocktest.NewMutex()
	code := serve(lk, os.Stdout, func(*instancelock.GracefulShutdown) { lk.Lose(nil) })
	fmt.Println("exit code:", code)
	// Output:
	// workers stopped
	// exit code: 1
}

// A test of serve: another instance holds the lock, or the lock cannot
// be taken at all.
func Example_refused() {
	lk := instancelocktest.NewMutex()
	lk.SetHolder(instancelock.ProcessLock{PID: 4242, Hostname: "web-1"})
	fmt.Println("exit code:", serve(lk, os.Stdout, nil))

	lk.Release()
	lk.FailNext(errors.New("connection refused"))
	fmt.Println("exit code:", serve(lk, os.Stdout, nil))
	// Output:
	// another instance is running; not starting
	// exit code: 1
	// cannot take the lock: connection refused
	// exit code: 1
}

// The health handler reports the fake lock: readiness turns 503 when the
// lock is lost, and fencing tokens grow with each holding. As with the
// real locks, a lost holding is kept until Unlock: the lock is taken again
// only after it.
func ExampleMutex() {
	lk := instancelocktest.NewMutex()
	if err := lk.TryLock(); err != nil {
		panic(err)
	}
	h := instancelock.NewHealth(nil, lk)
	probe := func() int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return rec.Code
	}
	token, _ := lk.FencingToken()
	fmt.Println("held:", probe(), "token", token)
	lk.Lose(errors.New("lease expired"))
	fmt.Println("lost:", probe(), errors.Is(lk.Err(), instancelock.ErrLockLost))
	fmt.Println("TryLock before Unlock:", errors.Is(lk.TryLock(), instancelock.ErrAlreadyHeld))
	lk.Unlock()
	if err := lk.TryLock(); err != nil {
		panic(err)
	}
	token, _ = lk.FencingToken()
	fmt.Println("taken again:", probe(), "token", token)
	// Output:
	// held: 200 token 1
	// lost: 503 true
	// TryLock before Unlock: true
	// taken again: 200 token 2
}
