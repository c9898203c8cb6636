package instancelock_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/ad5dec64/instancelock"
)

// The whole main of a backend: acquire the lock, register the hooks, serve,
// wait, exit with the right code. SIGTERM or Ctrl-C runs the hooks in
// reverse order (the HTTP server stops before the database closes) and
// releases the lock last; a second Ctrl-C exits at once with status 130.
func ExampleGracefulShutdown() {
	lk, err := instancelock.New("./data/backend.pid")
	if err == nil {
		lk.Port, lk.Logger = 8080, slog.Default()
		err = lk.TryLock()
	}
	if err != nil {
		var running *instancelock.AlreadyRunningError
		if errors.As(err, &running) {
			fmt.Fprint(os.Stderr, running.Help(""))
		} else {
			fmt.Fprintln(os.Stderr, err)
		}
		os.Exit(1)
	}
	g := instancelock.NewGracefulShutdown(lk) // releases lk as its last step
	g.Logger = slog.Default()
	g.Timeout = 10 * time.Second

	db := openDatabase()
	g.Add("database", db.Close)
	srv := &http.Server{Addr: ":8080"}
	g.Add("http", srv.Shutdown) // registered last, runs first

	if err := g.Start(context.Background()); err != nil {
		panic(err) // only if Start is called twice
	}
	go func() {
		if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
			g.Shutdown(err) // the server could not start: shut down with that cause
		}
	}()
	g.State().Set(instancelock.StatusRunning)

	err = g.Wait()
	slog.Info("stopped", "cause", context.Cause(g.Context()), "err", err)
	os.Exit(g.ExitCode())
}

// exampleDB stands for the program's database.
type exampleDB struct{}

func openDatabase() *exampleDB                     { return &exampleDB{} }
func (*exampleDB) Close(ctx context.Context) error { return nil }

// Shutdown can be called from code, and hooks run like deferred calls. The
// lock is released after the last hook, and a failing hook does not stop
// the others.
func ExampleGracefulShutdown_Shutdown() {
	dir, err := os.MkdirTemp("", "example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "app.pid")
	lk, err := instancelock.Acquire(path)
	if err != nil {
		panic(err)
	}

	g := instancelock.NewGracefulShutdown(lk)
	g.Add("database", func(ctx context.Context) error {
		fmt.Println("closing the database; state:", g.State().Status())
		return nil
	})
	g.Add("agents", func(ctx context.Context) error {
		fmt.Println("stopping the agents")
		return errors.New("agent 3 did not stop")
	})
	g.Add("http", func(ctx context.Context) error {
		fmt.Println("stopping the HTTP server")
		return nil
	})

	err = g.Shutdown(nil)
	fmt.Println("error:", err)
	fmt.Println("cause:", context.Cause(g.Context()))
	_, statErr := os.Stat(path)
	fmt.Println("PID file removed:", errors.Is(statErr, os.ErrNotExist))
	fmt.Println("state:", g.State().Status(), "exit code:", g.ExitCode())
	// Output:
	// stopping the HTTP server
	// stopping the agents
	// closing the database; state: stopping
	// error: instancelock: shutdown hook "agents": agent 3 did not stop
	// cause: shutdown requested
	// PID file removed: true
	// state: stopped exit code: 1
}

// Context is cancelled when the shutdown begins, so background work can use
// it; context.Cause tells why.
func ExampleGracefulShutdown_Context() {
	g := instancelock.NewGracefulShutdown(nil)
	worker := make(chan struct{})
	go func() {
		defer close(worker)
		<-g.Context().Done() // the worker's loop would select on this
		fmt.Println("worker stops:", context.Cause(g.Context()))
	}()
	g.Add("worker", func(ctx context.Context) error {
		select {
		case <-worker:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	fmt.Println("shutdown:", g.Shutdown(errors.New("maintenance")))
	// Output:
	// worker stops: maintenance
	// shutdown: <nil>
}
