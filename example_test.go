package instancelock_test

import (
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/ad5dec64/instancelock"
)

// The three lines at the top of main: acquire, or report who runs.
func ExampleAcquire() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "data", "backend.pid")

	lk, err := instancelock.Acquire(path)
	if err != nil {
		log.Fatal(err)
	}
	defer lk.Unlock()

	// A second instance is refused, with the holder's details.
	_, err = instancelock.Acquire(path)
	var running *instancelock.AlreadyRunningError
	if errors.As(err, &running) {
		fmt.Println(errors.Is(err, instancelock.ErrAlreadyRunning))
		fmt.Println(running.Holder.PID == os.Getpid())
	}
	// Output:
	// true
	// true
}

// Configuring a Locker: New, set the fields, then TryLock. The port is
// recorded in the PID file, so a refused start can tell where the running
// instance serves.
func ExampleLocker() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "data", "backend.pid")

	lk, err := instancelock.New(path)
	if err != nil {
		log.Fatal(err)
	}
	lk.Port = 3000 // and Logger, WatchInterval, ...: see Locker
	if err := lk.TryLock(); err != nil {
		log.Fatal(err)
	}
	defer lk.Unlock()

	_, err = instancelock.Acquire(path)
	var running *instancelock.AlreadyRunningError
	if errors.As(err, &running) {
		fmt.Println(errors.Is(err, instancelock.ErrAlreadyRunning))
		fmt.Println(running.Holder.PID == os.Getpid(), running.Holder.Port)
	}
	// Output:
	// true
	// true 3000
}

// Reading the PID file of another instance, as a status tool does.
func ExampleLocker_Running() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "backend.pid")

	l, _ := instancelock.New(path)
	_, running, err := l.Running()
	fmt.Println(running, err)

	// A file left by a process that no longer exists is stale.
	os.WriteFile(path, []byte("999999999\n"), 0o644)
	holder, running, err := l.Running()
	fmt.Println(holder.PID, running, err)
	cleaned, err := l.CleanStale()
	fmt.Println(cleaned, err)
	// Output:
	// false <nil>
	// 999999999 false <nil>
	// true <nil>
}

func ExampleParseProcessLock() {
	pl, err := instancelock.ParseProcessLock([]byte(
		`{"pid":12345,"startedAt":"2025-11-27T20:00:00.000Z","port":3000,"goVersion":"go1.26.8","instanceId":"3f0c","hostname":"web-1"}`))
	fmt.Println(pl, err)

	legacy, err := instancelock.ParseProcessLock([]byte("4242\n"))
	fmt.Println(legacy.PID, err)

	_, err = instancelock.ParseProcessLock([]byte(`{"pid":-1,"startedAt":"2025-11-27T20:00:00.000Z"}`))
	fmt.Println(err)
	// Output:
	// pid 12345 on web-1, started 2025-11-27T20:00:00.000Z, port 3000 <nil>
	// 4242 <nil>
	// invalid process lock: pid -1 is not positive
}
