//go:build !plan9

package instancelock_test

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/ad5dec64/instancelock"
)

// A host application's test drives its start-up through an in-memory file
// system: a full disk, a second instance, a crashed first instance.
func ExampleMemFS() {
	m := instancelock.NewMemFS()
	opts := []instancelock.Option{instancelock.WithFS(m), instancelock.WithWatchInterval(-1)}

	// The disk is full: the lock is not taken, and nothing is left behind.
	m.Fail("write", "", syscall.ENOSPC)
	_, err := instancelock.Acquire("/run/app.pid", opts...)
	names, _ := m.ListDir("/run")
	fmt.Println(errors.Is(err, syscall.ENOSPC), names, m.OpenFiles())
	m.Clear()

	first, err := instancelock.Acquire("/run/app.pid", opts...)
	fmt.Println("first:", err)
	_, err = instancelock.Acquire("/run/app.pid", opts...)
	fmt.Println("second:", errors.Is(err, instancelock.ErrAlreadyRunning))

	// The first instance crashes: its file stays, its kernel lock goes,
	// and the next start takes the file over.
	m.CloseHandles("/run/app.pid")
	third, err := instancelock.Acquire("/run/app.pid", opts...)
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
	m := instancelock.NewMemFS()
	procs := instancelock.NewMemProcesses()
	m.MkdirAll("/run", 0o755)
	m.WriteFile("/run/app.pid", []byte(`{"pid":4242,"startedAt":"2025-11-27T20:00:00.000Z","startToken":"boot-1:100"}`), 0o644)
	procs.Add(4242, "boot-1:900", time.Now())

	l, _ := instancelock.New("/run/app.pid", instancelock.WithFS(m), instancelock.WithProcessTable(procs))
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
