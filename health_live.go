package instancelock

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// live is the liveness rule of Liveness and of the systemd watchdog: nil
// while stopping, and while starting or running if every Critical check
// passes; an error once stopped. The
// checks' results are cached for CacheTTL, as for readiness; a refresh is
// waited for until ctx ends.
func (h *Health) live(ctx context.Context) error {
	h.init()
	if h.state != nil {
		switch h.state.Status() {
		case StatusStopped:
			return errors.New("the lifecycle is stopped")
		case StatusStopping:
			return nil // draining touches no dependency
		}
	}
	reg := h.reg.Load()
	if !reg.critical {
		return nil
	}
	ttl, now := h.cacheTTL(), time.Now()
	for _, c := range reg.checks {
		if !c.Critical {
			continue
		}
		r, f := c.result(now, ttl)
		if f != nil {
			select {
			case <-f.done:
				r = f.res
			case <-ctx.Done():
				return fmt.Errorf("critical check %q: %w", c.Name, context.Cause(ctx))
			}
		}
		if r.err != nil {
			return fmt.Errorf("critical check %q failed: %w", c.Name, r.err)
		}
	}
	return nil
}
