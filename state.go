package instancelock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// Status is a step of an instance's lifecycle:
// starting → running → stopping → stopped.
type Status int32

// The lifecycle steps, in order.
const (
	StatusStarting Status = iota // the process is setting up; not ready to serve
	StatusRunning                // the host marked the instance ready
	StatusStopping               // shutdown has begun; draining
	StatusStopped                // shutdown finished; the lock is released
)

var statusNames = [...]string{"starting", "running", "stopping", "stopped"}

// String returns "starting", "running", "stopping" or "stopped".
func (s Status) String() string {
	if s < 0 || int(s) >= len(statusNames) {
		return fmt.Sprintf("Status(%d)", int32(s))
	}
	return statusNames[s]
}

// ErrInvalidTransition is matched by the error State.Set returns for a move
// the lifecycle does not allow.
var ErrInvalidTransition = errors.New("invalid lifecycle transition")

// State is the lifecycle of one instance: an instance id, the time it was
// created and a Status. It is safe for concurrent use; Status and the other
// getters are a single atomic load, cheap enough for every health request.
type State struct {
	id        string
	startedAt time.Time
	status    atomic.Int32

	changed atomic.Pointer[func(Status)] // called after each move; set by GracefulShutdown.Start

	mu      sync.Mutex
	healths []*Health // built on this State, for the watchdog's liveness rule
}

// NewState returns a State in StatusStarting. instanceID names the instance
// (use the Locker's ProcessLock.InstanceID so the PID file, the health
// response and the logs agree); "" picks a new random UUID.
func NewState(instanceID string) *State {
	if instanceID == "" {
		instanceID = uuid.NewString()
	}
	return &State{id: instanceID, startedAt: time.Now()}
}

// InstanceID returns the instance id given to NewState.
func (s *State) InstanceID() string { return s.id }

// StartedAt returns when the State was created.
func (s *State) StartedAt() time.Time { return s.startedAt }

// Status returns the current step.
func (s *State) Status() Status { return Status(s.status.Load()) }

// Set moves the lifecycle to status to. The allowed moves are
// starting → running, starting → stopping, running → stopping and
// stopping → stopped; setting the current status again is a no-op. Any
// other move is refused with an error matching ErrInvalidTransition and
// leaves the status unchanged.
func (s *State) Set(to Status) error {
	for {
		from := Status(s.status.Load())
		if from == to {
			return nil
		}
		if !allowed(from, to) {
			return fmt.Errorf("instancelock: %w: %s → %s", ErrInvalidTransition, from, to)
		}
		if s.status.CompareAndSwap(int32(from), int32(to)) {
			if f := s.changed.Load(); f != nil {
				(*f)(to)
			}
			return nil
		}
	}
}

func allowed(from, to Status) bool {
	switch from {
	case StatusStarting:
		return to == StatusRunning || to == StatusStopping
	case StatusRunning:
		return to == StatusStopping
	case StatusStopping:
		return to == StatusStopped
	}
	return false
}

// addHealth records a Health built on s.
func (s *State) addHealth(h *Health) {
	s.mu.Lock()
	s.healths = append(s.healths, h)
	s.mu.Unlock()
}

// live applies the liveness rule of every Health built on s (see
// Health.Liveness); without one, the instance is live until it is stopped.
func (s *State) live(ctx context.Context) error {
	s.mu.Lock()
	hs := s.healths
	s.mu.Unlock()
	if len(hs) == 0 && s.Status() == StatusStopped {
		return errors.New("the lifecycle is stopped")
	}
	for _, h := range hs {
		if err := h.live(ctx); err != nil {
			return err
		}
	}
	return nil
}
