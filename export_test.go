package instancelock

// What the external tests (package instancelock_test) need of the
// package's insides. The tests that use the fakes of instancelocktest live
// there, since instancelocktest imports this package; most of them drive
// the Locker through its public API and need none of this.

import "errors"

var (
	// The operating system's FS and ProcessTable, which the fakes are
	// checked against.
	OSFS        FS           = osFS{}
	OSProcesses ProcessTable = osProcesses{}

	ErrContended  = errContended
	ErrNotRegular = errNotRegular
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

// AttemptInPlace is one attempt of the in-place way: the file when it
// won; otherwise what it came to ("again": the file changed; "refused" or
// "refused, transient", with the holder) or its error.
func AttemptInPlace(l *Locker, data []byte) (f File, outcome string, holder *AlreadyRunningError, err error) {
	if err := l.setup(); err != nil { // as TryLock does first
		return nil, "", nil, err
	}
	a, err := l.attemptInPlace(data, true)
	outcome = map[try]string{again: "again", won: "won", refused: "refused", noTemp: "no temporary file"}[a.try]
	if a.try == refused && a.transient {
		outcome += ", transient"
	}
	errors.As(a.refusal, &holder)
	return a.f, outcome, holder, err
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
