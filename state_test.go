package instancelock

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStateTransitions(t *testing.T) {
	all := []Status{StatusStarting, StatusRunning, StatusStopping, StatusStopped}
	ok := map[[2]Status]bool{
		{StatusStarting, StatusRunning}:  true,
		{StatusStarting, StatusStopping}: true,
		{StatusRunning, StatusStopping}:  true,
		{StatusStopping, StatusStopped}:  true,
	}
	for _, from := range all {
		for _, to := range all {
			s := NewState("")
			s.status.Store(int32(from))
			err := s.Set(to)
			switch {
			case from == to || ok[[2]Status{from, to}]:
				require.NoError(t, err, "%s → %s", from, to)
				assert.Equal(t, to, s.Status())
			default:
				require.ErrorIs(t, err, ErrInvalidTransition, "%s → %s", from, to)
				assert.ErrorContains(t, err, from.String()+" → "+to.String())
				assert.Equal(t, from, s.Status(), "a refused move changes nothing")
			}
		}
	}
	assert.ErrorIs(t, NewState("").Set(Status(9)), ErrInvalidTransition)
}

func TestStateBasics(t *testing.T) {
	s := NewState("my-id")
	assert.Equal(t, "my-id", s.InstanceID())
	assert.Equal(t, StatusStarting, s.Status())
	assert.False(t, s.StartedAt().IsZero())
	a, b := NewState(""), NewState("")
	assert.Len(t, a.InstanceID(), 36)
	assert.NotEqual(t, a.InstanceID(), b.InstanceID(), "each instance gets a unique id")
	for s, want := range map[Status]string{StatusStarting: "starting", StatusRunning: "running",
		StatusStopping: "stopping", StatusStopped: "stopped", Status(7): "Status(7)", Status(-1): "Status(-1)"} {
		assert.Equal(t, want, s.String())
	}
}

// Concurrent movers: exactly one of many goroutines racing running →
// stopping does it, the others find it done (a no-op), and readers never
// see anything but the two states.
func TestStateConcurrent(t *testing.T) {
	s := NewState("")
	require.NoError(t, s.Set(StatusRunning))
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(2)
		go func() { defer wg.Done(); assert.NoError(t, s.Set(StatusStopping)) }()
		go func() {
			defer wg.Done()
			st := s.Status()
			assert.True(t, st == StatusRunning || st == StatusStopping, "%s", st)
		}()
	}
	wg.Wait()
	assert.Equal(t, StatusStopping, s.Status())
	assert.ErrorIs(t, s.Set(StatusRunning), ErrInvalidTransition)
}
