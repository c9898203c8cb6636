//go:build !plan9

package instancelocktest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/ad5dec64/instancelock"
	"github.com/ad5dec64/instancelock/instancelocktest"
)

// app is a program's main without os.Exit: it takes the PID-file lock lk,
// runs until ctx is done, and returns the exit code. main calls
// app(ctx, os.Stderr, lk) with lk from instancelock.New("/run/app.pid")
// (the real disk and processes); its tests set lk.FS and lk.Processes to a
// MemFS and a MemProcesses first.
func app(ctx context.Context, stderr io.Writer, lk *instancelock.Locker) int {
	err := lk.TryLock()
	var running *instancelock.AlreadyRunningError
	switch {
	case errors.As(err, &running):
		fmt.Fprintf(stderr, "not starting: already running as pid %d\n", running.Holder.PID)
		return 2
	case err != nil:
		fmt.Fprintln(stderr, "not starting:", err)
		return 1
	}
	defer lk.Unlock()
	<-ctx.Done()
	return 0
}

// A test of app: a second start is refused while the first instance
// lives, and once it has crashed the next start takes its PID file over.
// Nothing touches the disk or another process.
func Example_secondStart() {
	m := instancelocktest.NewMemFS()
	procs := instancelocktest.NewMemProcesses()
	lock := func() *instancelock.Locker { // what the test gives app
		lk, _ := instancelock.New("/run/app.pid")
		lk.FS, lk.Processes = m, procs
		return lk
	}

	// The first instance, pid 4242, holds the lock: a test plays another
	// process by holding the file's lock through an open file of its own.
	procs.Add(4242, "boot-1:100", time.Now())
	m.MkdirAll("/run", 0o755)
	m.WriteFile("/run/app.pid", []byte(`{"pid":4242,"startedAt":"2025-11-27T20:00:00.000Z","startToken":"boot-1:100"}`), 0o644)
	first, _ := m.OpenFile("/run/app.pid", os.O_RDONLY, 0)
	first.TryLock()

	stopped, stop := context.WithCancel(context.Background())
	stop() // app returns at once once it has started
	fmt.Println("exit code:", app(stopped, os.Stdout, lock()))

	// The first instance crashes: its lock goes with it, its file stays.
	first.Close()
	procs.Remove(4242)
	fmt.Println("exit code:", app(stopped, os.Stdout, lock()))
	names, _ := m.ListDir("/run")
	fmt.Println("left behind:", names, m.OpenFiles())
	// Output:
	// not starting: already running as pid 4242
	// exit code: 2
	// exit code: 0
	// left behind: [] []
}

// A test of app: a full disk makes the start fail with exit code 1, and
// the failed start leaves nothing behind.
func Example_diskFull() {
	m := instancelocktest.NewMemFS()
	m.Fail("write", "", syscall.ENOSPC)
	var stderr strings.Builder
	lk, _ := instancelock.New("/run/app.pid")
	lk.FS = m
	code := app(context.Background(), &stderr, lk)
	names, _ := m.ListDir("/run")
	fmt.Println("exit code:", code, "ENOSPC reported:", strings.Contains(stderr.String(), syscall.ENOSPC.Error()))
	fmt.Println("left behind:", names, m.OpenFiles())
	// Output:
	// exit code: 1 ENOSPC reported: true
	// left behind: [] []
}

// A host application's test drives its start-up through an in-memory file
// system: a full disk, a second instance, a crashed first instance.
func ExampleMemFS() {
	m := instancelocktest.NewMemFS()
	acquire := func() (*instancelock.Locker, error) {
		lk, _ := instancelock.New("/run/app.pid")
		lk.FS, lk.WatchInterval = m, -1
		return lk, lk.TryLock()
	}

	// The disk is full: the lock is not taken, and nothing is left behind.
	m.Fail("write", "", syscall.ENOSPC)
	_, err := acquire()
	names, _ := m.ListDir("/run")
	fmt.Println(errors.Is(err, syscall.ENOSPC), names, m.OpenFiles())
	m.Clear()

	first, err := acquire()
	fmt.Println("first:", err)
	_, err = acquire()
	fmt.Println("second:", errors.Is(err, instancelock.ErrAlreadyRunning))

	// The first instance crashes: its file stays, its kernel lock goes,
	// and the next start takes the file over.
	m.CloseHandles("/run/app.pid")
	third, err := acquire()
	fmt.Println("third:", err)
	fmt.Println(third.InstanceID() != first.InstanceID())
	fmt.Println(third.Unlock(), m.OpenFiles())
	// Output:
	// true [] []
	// first: <nil>
	// second: true
	// third: <nil>
	// true
	// <nil> []
}

// A PID file whose pid now belongs to another program (the start token
// differs) is stale: Terminate refuses to signal that stranger. It
// signals only a process that holds the lock.
func ExampleMemProcesses() {
	m := instancelocktest.NewMemFS()
	procs := instancelocktest.NewMemProcesses()
	m.MkdirAll("/run", 0o755)
	m.WriteFile("/run/app.pid", []byte(`{"pid":4242,"startedAt":"2025-11-27T20:00:00.000Z","startToken":"boot-1:100"}`), 0o644)
	procs.Add(4242, "boot-1:900", time.Now())

	l, _ := instancelock.New("/run/app.pid")
	l.FS, l.Processes = m, procs
	_, running, _ := l.Running()
	fmt.Println("running:", running)
	fmt.Println(errors.Is(l.Terminate(nil), instancelock.ErrNotRunning), len(procs.Signals()))

	// Had the process kept its start token, it would be the writer; but
	// being named in the file is no proof: it must hold the lock too.
	procs.Add(4242, "boot-1:100", time.Now())
	fmt.Println(errors.Is(l.Terminate(nil), instancelock.ErrNotRunning), len(procs.Signals()))
	held, _ := m.OpenFile("/run/app.pid", os.O_RDONLY, 0) // the process takes its lock
	held.TryLock()
	_, running, _ = l.Running()
	fmt.Println("running:", running)
	fmt.Println(l.Terminate(nil), procs.Signals()[0].PID)
	// Output:
	// running: false
	// true 0
	// true 0
	// running: true
	// <nil> 4242
}
