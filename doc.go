// Package instancelock guarantees that a single instance of a program runs on
// a host, and shuts it down cleanly.
//
// A backend adds three lines to the top of main:
//
//	lk, err := instancelock.Acquire("./data/backend.pid")
//	if err != nil { log.Fatal(err) } // errors.Is(err, instancelock.ErrAlreadyRunning)
//	defer lk.Unlock()
//
// The lock is a PID file whose content is a JSON [ProcessLock] (who holds the
// lock: pid, start time, port, Go version, instance id, host) and a kernel
// lock (flock on Unix, LockFileEx on Windows) that the holder keeps for the
// life of its process. When the holder dies, however it dies, the kernel
// drops the lock and the next start takes the file over without any human
// help or age heuristics.
//
// [GracefulShutdown] runs the program's shutdown hooks on SIGTERM or SIGINT
// and releases the lock last; [Health] is an [net/http.Handler] that reports
// the instance's metadata, checks and counters.
//
// Configuration follows one rule. What a type cannot work without is an
// argument of its constructor ([New] takes the path, [NewGracefulShutdown]
// the lock, [NewHealth] the State and the lock); everything optional is an
// exported field, set after the constructor and before the first method
// call, and never changed afterwards, as for [net/http.Server]. The zero
// value of every field is its default, written in the field's comment (the
// Locker's fields are fixed by its first TryLock, Lock, Unlock, Holder,
// Running, CleanStale or Terminate, not by NewGracefulShutdown, NewHealth
// or its getters, so it may be wired first and configured after): in
// a duration, 0 is that default and a negative value means off or no limit
// (each field says which); a nil Logger is silent; booleans are named so
// that false is the default ([Locker.DisableRepublish]). The zero value of
// each type is ready to use: &Locker{} locks [DefaultPath],
// &GracefulShutdown{} is NewGracefulShutdown(nil) and &Health{} is
// NewHealth(nil, nil).
//
// Importing the package does nothing: no init function, no signal handler, no
// goroutine. Everything starts when the program calls it.
package instancelock
