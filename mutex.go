package instancelock

import (
	"context"
	"errors"
)

// Mutex is what GracefulShutdown and Health need of an instance lock, and
// what every lock of this project provides: the PID-file Locker for one
// host, and the PostgreSQL (pglock) and Redis (redislock) lockers for a
// fleet. *Locker satisfies it.
type Mutex interface {
	// TryLock acquires the lock without waiting; when another instance
	// holds it, the error matches ErrAlreadyRunning.
	TryLock() error
	// Lock acquires the lock, waiting until ctx is done.
	Lock(ctx context.Context) error
	// Unlock releases the lock. It returns nil when the lock is not held,
	// so it may be called more than once.
	Unlock() error
	// Holder returns the ProcessLock of the current holder; the error
	// matches ErrNotRunning when nobody holds the lock.
	Holder() (ProcessLock, error)
	// Lost returns a channel closed when the held lock is lost (nil when
	// not held). The holder must then stop the work the lock protects.
	Lost() <-chan struct{}
	// Err returns nil while the lock is held, ErrNotHeld when it is not,
	// and an error matching ErrLockLost after a loss.
	Err() error
	// InstanceID returns the instance id written in the holder's
	// ProcessLock.
	InstanceID() string
}

// Fencer is implemented by locks that hand out fencing tokens: a number
// that grows with every new holder, so that a resource can refuse writes
// from a holder that was paused past the loss of its lock. The PID-file
// Locker has none (the kernel lock cannot be lost to a live process
// without the file vanishing, which Lost reports).
type Fencer interface {
	// FencingToken returns the token of the current holding, and false
	// when the lock is not held.
	FencingToken() (uint64, bool)
}

// ErrAlreadyHeld is returned by TryLock and Lock when the lock is already
// held by the same locker value: a second acquisition is a mistake of the
// program, not a wait. The PID-file Locker's Terminate returns it when the
// holder is this process, which it never signals.
var ErrAlreadyHeld = errors.New("lock is already held by this process")

var _ Mutex = (*Locker)(nil)

// nilMutex turns a nil *Locker stored in a Mutex into a nil Mutex.
func nilMutex(m Mutex) Mutex {
	if l, ok := m.(*Locker); ok && l == nil {
		return nil
	}
	return m
}
