package instancelock

import "errors"

// What the external tests (package instancelock_test) need of the
// package's insides. The tests that use the fakes of instancelocktest live
// there, since instancelocktest imports this package; most of them drive
// the Locker through its public API and need none of this.

var (
	// The operating system's FS and ProcessTable, which the fakes are
	// checked against.
	OSFS        FS           = osFS{}
	OSProcesses ProcessTable = osProcesses{}

	ErrContended  = errContended
	ErrNotRegular = errNotRegular
	ErrRetry      = errRetry
	ErrSymlink    = errSymlink
	MaxAttempts   = maxAttempts
	DefaultSignal = defaultSignal

	// Helpers of helper_test.go: child processes and goroutine leaks.
	Helpers              = helpers
	HelperCmd            = helperCmd
	CheckNoGoroutineLeak = checkNoGoroutineLeak
)

// PublishesByRename reports whether l publishes its PID file by renaming a
// temporary file into place (Unix) rather than writing it in place.
func PublishesByRename(l *Locker) bool {
	l.setup()
	return l.byRename
}

// WriteInPlace makes l write its PID file in place, the Windows way, on
// any FS.
func WriteInPlace(l *Locker) {
	l.setup() // first, or the first method call would set byRename again
	l.byRename = false
}

// AttemptInPlace is one attempt of the in-place way. A refusal that names
// a holder is reported by RetryableRefusal.
func AttemptInPlace(l *Locker, data []byte) (File, error) {
	l.setup()
	return l.attemptInPlace(data)
}

// RetryableRefusal returns the holder named by an attempt's refusal and
// whether the attempt may be retried; ok is false for another error.
func RetryableRefusal(err error) (holder ProcessLock, retry, ok bool) {
	var rt retryable
	if !errors.As(err, &rt) {
		return ProcessLock{}, false, false
	}
	return rt.Holder, rt.retry, true
}

// IsRemnant reports whether data is what a crash leaves of a PID file.
func IsRemnant(data []byte) bool {
	_, kind := classify(data)
	return kind == contentRemnant
}

// SetUnixMemFS gives the internal tests a MemFS with Unix's rules (see
// losableFS): they cannot import instancelocktest.
func SetUnixMemFS(newFS func() FS) { newUnixMemFS = newFS }

// CheckHeld runs the holder's strict check that the file at the path is
// still the one it locked.
func CheckHeld(l *Locker) error { return l.check(l.t, true) }
