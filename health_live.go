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
	if c, err := h.criticalFailure(ctx, reg); err != nil {
		return fmt.Errorf("critical check %q failed: %w", c.Name, err)
	}
	return nil
}

// criticalFailure returns the first Critical check of reg that fails and
// its error (the check's, or why no result came before ctx ended); nil, nil
// when every Critical check passes.
func (h *Health) criticalFailure(ctx context.Context, reg *healthRegistry) (*healthCheck, error) {
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
				return c, fmt.Errorf("request ended before the check: %w", context.Cause(ctx))
			}
		}
		if r.err != nil {
			return c, r.err
		}
	}
	return nil, nil
}
