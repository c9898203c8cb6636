package redislock_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/ad5dec64/instancelock"
	"github.com/ad5dec64/instancelock/redislock"
	"github.com/redis/go-redis/v9"
)

// One process of the fleet does the singleton work; the others wait. The
// work stops when the lock is lost. (The examples need a Redis server, so
// they are compiled but not run.)
func Example() {
	lk, err := redislock.Open("redis://127.0.0.1:6379", "orchestrator")
	if err != nil {
		log.Fatal(err)
	}
	defer lk.Close()
	lk.Port = 3000 // recorded with the holder; set before the first other call
	if err := lk.Lock(context.Background()); err != nil {
		log.Fatal(err)
	}
	fence, _ := lk.FencingToken()
	fmt.Println("orchestrating with fencing token", fence)
	select {
	case <-lk.Lost():
		log.Println("stopping:", lk.Err())
	case <-time.After(time.Hour):
	}
}

// TryLock refuses at once when another instance holds the lock, and tells
// which one.
func ExampleLocker_TryLock() {
	lk, err := redislock.Open("redis://127.0.0.1:6379", "orchestrator")
	if err != nil {
		log.Fatal(err)
	}
	defer lk.Close()
	var running *instancelock.AlreadyRunningError
	switch err := lk.TryLock(); {
	case errors.As(err, &running):
		fmt.Print(running.Help(""))
		os.Exit(1)
	case err != nil:
		log.Fatal(err)
	}
	// … the singleton work …
}

// The resource the lock protects refuses writes that carry an older
// fencing token than one it has seen: a holder that was paused past the
// loss of its lease cannot overwrite the work of the holder after it.
func ExampleLocker_FencingToken() {
	var db *sql.DB // the protected resource, which keeps the highest token it has seen
	lk, err := redislock.Open("redis://127.0.0.1:6379", "orchestrator")
	if err != nil {
		log.Fatal(err)
	}
	defer lk.Close()
	if err := lk.Lock(context.Background()); err != nil {
		log.Fatal(err)
	}
	fence, ok := lk.FencingToken()
	if !ok {
		log.Fatal(lk.Err())
	}
	res, err := db.Exec(`UPDATE schedule SET next_run = $1, fence = $2 WHERE id = 1 AND fence <= $2`,
		time.Now().Add(time.Minute), fence)
	if err != nil {
		log.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		log.Fatal("a newer holder took over: stop")
	}
}

// A host gives the Locker to GracefulShutdown, which shuts it down when the
// lock is lost, and releases the lock last. The client belongs to the host.
func ExampleNew() {
	client := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{"127.0.0.1:6379"}})
	defer client.Close()
	lk, err := redislock.New(client, "scheduler")
	if err != nil {
		log.Fatal(err)
	}
	lk.TTL = 15 * time.Second // a dead holder keeps the others out for 15 s at most (0: 10 s)
	lk.Logger = slog.Default()
	if err := lk.Lock(context.Background()); err != nil {
		log.Fatal(err)
	}
	g := instancelock.NewGracefulShutdown(lk)
	g.Add("scheduler", func(ctx context.Context) error { return nil })
	if err := g.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	g.State().Set(instancelock.StatusRunning)
	if err := g.Wait(); err != nil {
		log.Print(err)
	}
	os.Exit(g.ExitCode())
}
