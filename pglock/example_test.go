package pglock_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ad5dec64/instancelock"
	"github.com/ad5dec64/instancelock/pglock"
)

// One replica of a fleet does the singleton work: the others wait in Lock
// and take over when the holder stops or dies. The work stops as soon as the
// lock is lost, and every write carries the fencing token so that the
// resource can refuse a holder that was paused past its loss.
func ExampleLocker() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	lk, err := pglock.New(os.Getenv("DATABASE_URL"), "orchestrator")
	if err != nil {
		log.Fatal(err)
	}
	lk.Port = 8080                        // recorded with the holder
	lk.Logger = slog.Default()            // acquisitions, takeover waits, losses
	lk.KeepAlive = 500 * time.Millisecond // learn of a loss within 0.5 s (0: 1 s)
	if err := lk.Lock(ctx); err != nil {  // waits while another replica holds it
		log.Fatal(err)
	}
	defer lk.Unlock()
	token, _ := lk.FencingToken()
	log.Printf("orchestrating with fencing token %d", token)

	select {
	case <-ctx.Done(): // shutting down: Unlock hands over at once
	case <-lk.Lost(): // the session ended or the server stopped answering
		log.Printf("stopping the work: %v", lk.Err())
	}
}

// TryLock tells a replica that another one is active, and which.
func ExampleLocker_TryLock() {
	lk, err := pglock.New("postgres://app@db.internal/app", "orchestrator")
	if err != nil {
		log.Fatal(err)
	}
	err = lk.TryLock()
	var running *instancelock.AlreadyRunningError
	switch {
	case errors.As(err, &running):
		fmt.Printf("standing by: %v is active\n", running.Holder)
	case errors.Is(err, pglock.ErrTransactionPooler):
		log.Fatal("connect to PostgreSQL directly, not through PgBouncer in transaction mode")
	case err != nil:
		log.Fatal(err)
	default:
		defer lk.Unlock()
		fmt.Println("active")
	}
}

// A Locker is an instancelock.Mutex: GracefulShutdown shuts the program
// down when the lock is lost and releases it as its last step.
func ExampleLocker_gracefulShutdown() {
	lk, err := pglock.New(os.Getenv("DATABASE_URL"), "scheduler")
	if err != nil {
		log.Fatal(err)
	}
	if err := lk.Lock(context.Background()); err != nil {
		log.Fatal(err)
	}
	g := instancelock.NewGracefulShutdown(lk)
	if err := g.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	g.State().Set(instancelock.StatusRunning)
	g.Wait()
	os.Exit(g.ExitCode())
}

// The advisory lock key of a name: the same in every process and version.
func ExampleKey() {
	fmt.Println(pglock.Key("orchestrator"))
	// Output: 1240578411992124563
}
