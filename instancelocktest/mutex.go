// Package instancelocktest provides fakes for unit tests of programs that
// use instancelock: a Mutex whose holder can be made to lose the lock, to
// be refused, or to hand out fencing tokens, without files, processes or
// servers, and a way to do to a GracefulShutdown what a signal would,
// without sending one.
//
//	lk := instancelocktest.NewMutex()
//	code := run(ctx, lk) // the program's main, taking an instancelock.Mutex
//	lk.Lose(nil)         // the holder loses the lock: run must stop
//
// A program that uses the PID-file Locker itself is tested on an in-memory
// file system and process table, MemFS and MemProcesses, which plug into
// the Locker as its FS and Processes fields: a second instance, a crashed
// one, a full disk or a reused pid, without touching the disk or another
// process.
//
//	lk, err := instancelock.New("/run/app.pid")
//	lk.FS = instancelocktest.NewMemFS()
//	code := app(ctx, lk) // the program's main, taking the Locker
package instancelocktest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/ad5dec64/instancelock"
	"github.com/google/uuid"
)

// Mutex is a fake instancelock.Mutex and instancelock.Fencer, held in
// memory. It behaves as the real locks do (TryLock refuses while someone
// holds it, Lock waits, Unlock is idempotent, Lost and Err report a loss,
// a lost holding is kept until Unlock), and the test decides what happens around it: another instance holding
// the lock (SetHolder, Release), the next acquisition failing (FailNext),
// the holder losing the lock (Lose). Every acquisition hands out the next
// fencing token, starting at 1.
//
// Use NewMutex; a Mutex is safe for concurrent use.
type Mutex struct {
	id string

	mu       sync.Mutex
	held     bool                      // this Mutex holds the lock
	tenure   bool                      // from an acquisition to Unlock, a loss included: Lost is not nil
	other    *instancelock.ProcessLock // another instance holds it
	freed    chan struct{}             // closed when the lock is free; replaced when taken
	lost     chan struct{}             // of the current holding
	lostErr  error                     // why it was lost
	failNext error
	token    uint64
}

var (
	_ instancelock.Mutex  = (*Mutex)(nil)
	_ instancelock.Fencer = (*Mutex)(nil)
)

// NewMutex returns a free Mutex with a new instance id.
func NewMutex() *Mutex {
	free := make(chan struct{})
	close(free)
	return &Mutex{id: uuid.NewString(), freed: free}
}

// TryLock takes the lock if it is free. It returns an
// *instancelock.AlreadyRunningError (matching instancelock.ErrAlreadyRunning)
// naming the holder set with SetHolder, or the error given to FailNext
// (once). Taking it again while held, or after the holding was lost (Lose)
// and before Unlock, returns an error matching instancelock.ErrAlreadyHeld,
// as the real locks do: a program that takes the lock again after a loss
// must Unlock first.
func (m *Mutex) TryLock() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, err := m.tryLocked()
	return err
}

// tryLocked is TryLock under m.mu; it also returns the channel to wait on
// when another instance holds the lock.
func (m *Mutex) tryLocked() (<-chan struct{}, error) {
	if err := m.failNext; err != nil {
		m.failNext = nil
		return nil, err
	}
	switch {
	case m.held:
		return nil, fmt.Errorf("instancelocktest: %w", instancelock.ErrAlreadyHeld)
	case m.tenure:
		return nil, fmt.Errorf("instancelocktest: the holding was lost; Unlock before taking the lock again: %w", instancelock.ErrAlreadyHeld)
	}
	if m.other != nil {
		return m.freed, &instancelock.AlreadyRunningError{Path: "instancelocktest.Mutex", Holder: *m.other, Reason: "held by the holder set with SetHolder"}
	}
	m.held, m.tenure, m.lost, m.lostErr = true, true, make(chan struct{}), nil
	m.freed = make(chan struct{})
	m.token++
	return nil, nil
}

// Lock takes the lock, waiting while another instance holds it (until
// Release) or until ctx is done, when it returns context.Cause(ctx). It
// returns TryLock's other errors at once (ErrAlreadyHeld, an error given
// to FailNext), but for one that means the lock's server cannot be reached
// for now, which Lock rides out as pglock's and redislock's Lock do: an
// error matching a *net.OpError (a refused or reset connection, a dial
// timeout: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}),
// io.EOF or io.ErrUnexpectedEOF. Lock then tries again (the error given to
// FailNext is used up), unless ctx is done: it then returns an error
// matching both context.Cause(ctx) and that error. Any other error, a bare
// syscall.ECONNREFUSED included, ends Lock, as an I/O error ends the
// PID-file Locker's.
func (m *Mutex) Lock(ctx context.Context) error {
	for {
		m.mu.Lock()
		wait, err := m.tryLocked()
		m.mu.Unlock()
		if err != nil && wait == nil && transient(err) {
			if ctx.Err() != nil {
				return errors.Join(context.Cause(ctx), err)
			}
			continue
		}
		if wait == nil {
			return err
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// transient reports whether Lock rides out err: the lock's server cannot
// be reached for now (see Lock).
func transient(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// Unlock releases the lock, a lost holding included; it returns nil when
// the lock is not held.
func (m *Mutex) Unlock() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.held {
		m.held = false
		close(m.freed)
	}
	m.tenure = false
	return nil
}

// Holder returns this Mutex's ProcessLock (the current process, with its
// instance id) while it holds the lock, the ProcessLock given to SetHolder
// while another instance holds it, and an error matching
// instancelock.ErrNotRunning when the lock is free.
func (m *Mutex) Holder() (instancelock.ProcessLock, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.held:
		pl, err := instancelock.Current(0)
		pl.InstanceID = m.id
		return pl, err
	case m.other != nil:
		return *m.other, nil
	}
	return instancelock.ProcessLock{}, instancelock.ErrNotRunning
}

// Lost returns a channel closed when the current holding is lost (by
// Lose), as instancelock.Mutex says and the real locks do: the channel of
// the holding from TryLock or Lock until Unlock (a lost holding included,
// its channel then closed), and nil when the lock is not held: never
// taken, or released by Unlock.
func (m *Mutex) Lost() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.tenure {
		return nil
	}
	return m.lost
}

// Err returns nil while the lock is held, an error matching
// instancelock.ErrLockLost (and the cause given to Lose) after a loss, and
// instancelock.ErrNotHeld when the lock is not held.
func (m *Mutex) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.lostErr != nil:
		return m.lostErr
	case m.held:
		return nil
	}
	return instancelock.ErrNotHeld
}

// InstanceID returns the instance id of this Mutex.
func (m *Mutex) InstanceID() string { return m.id }

// FencingToken returns the token of the current holding (1 for the first
// acquisition, then one more for each) and true while the lock is held.
func (m *Mutex) FencingToken() (uint64, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.held {
		return 0, false
	}
	return m.token, true
}

// Lose makes the holder lose the lock, as a removed PID file or an expired
// lease would: Lost's channel is closed, and Err returns an error matching
// instancelock.ErrLockLost and cause (when not nil). The lost holding is
// kept until Unlock: TryLock and Lock return an error matching
// instancelock.ErrAlreadyHeld until then, as with the real locks. Another
// instance may take the lock meanwhile (SetHolder). Lose does nothing when
// the lock is not held.
func (m *Mutex) Lose(cause error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.held {
		return
	}
	if cause == nil {
		m.lostErr = fmt.Errorf("instancelocktest: %w", instancelock.ErrLockLost)
	} else {
		m.lostErr = fmt.Errorf("instancelocktest: %w: %w", instancelock.ErrLockLost, cause)
	}
	m.held = false
	close(m.lost)
	close(m.freed)
}

// SetHolder makes another instance, described by holder, hold the lock:
// TryLock refuses with an *instancelock.AlreadyRunningError naming it, and
// Lock waits until Release. It panics if this Mutex holds the lock (a
// mistake in the test).
func (m *Mutex) SetHolder(holder instancelock.ProcessLock) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.held {
		panic("instancelocktest: Mutex.SetHolder while the Mutex itself holds the lock")
	}
	if m.other == nil {
		m.freed = make(chan struct{})
	}
	m.other = &holder
}

// Release ends the holding set with SetHolder, waking a waiting Lock.
func (m *Mutex) Release() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.other != nil {
		m.other = nil
		close(m.freed)
	}
}

// FailNext makes the next attempt to take the lock, by TryLock or Lock,
// fail with err (nil means a generic error) without taking the lock:
// TryLock returns err; Lock returns it too, but for an error that the
// fleet locks' Lock rides out (a *net.OpError, io.EOF: see Lock), on
// which Lock tries again.
func (m *Mutex) FailNext(err error) {
	if err == nil {
		err = errors.New("instancelocktest: acquisition failed")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failNext = err
}
