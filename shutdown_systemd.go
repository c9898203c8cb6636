package instancelock

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ad5dec64/instancelock/internal/sdnotify"
)

// systemd notifications of a GracefulShutdown (a Type=notify service). None
// is sent unless NOTIFY_SOCKET is set; see the GracefulShutdown doc.

// sdStart sets up the notifications at Start: READY=1 when the State moves
// to running, and the watchdog when WATCHDOG_USEC is set for this process.
func (g *GracefulShutdown) sdStart() {
	n := sdnotify.FromEnv()
	if n == nil {
		return
	}
	g.sd = n
	ready := func(to Status) {
		if to == StatusRunning {
			g.sdNotify("READY=1", "STATUS=running")
		}
	}
	g.state.changed.Store(&ready)
	if g.state.Status() == StatusRunning {
		ready(StatusRunning) // the host was ready before Start
	} else {
		g.sdNotify("STATUS=starting")
	}
	interval, err := sdnotify.WatchdogInterval()
	if err != nil {
		g.logger().Warn("systemd watchdog not started", "err", err)
	}
	if interval > 0 {
		g.logger().Info("systemd watchdog", "interval", interval, "ping", interval/2)
		go g.sdWatchdog(interval)
	}
}

// sdNotify sends one notification; a failure is logged.
func (g *GracefulShutdown) sdNotify(lines ...string) {
	if g.sd == nil {
		return
	}
	g.sdMu.Lock()
	defer g.sdMu.Unlock()
	g.sdSend(lines...)
}

// sdSend is sdNotify with sdMu held.
func (g *GracefulShutdown) sdSend(lines ...string) {
	if err := g.sd.Notify(lines...); err != nil {
		g.logger().Warn("systemd notification failed", "err", err)
	}
}

// sdStopping tells systemd the shutdown began, and how long it may take:
// the drain delay, the overall deadline, the abandon margin and the
// release. With no overall deadline (timeout negative) it extends nothing:
// the unit's TimeoutStopSec= then bounds the shutdown.
func (g *GracefulShutdown) sdStopping(cause error, drain, timeout time.Duration) {
	if g.sd == nil {
		return
	}
	lines := []string{"STOPPING=1", "STATUS=stopping: " + oneLine(errorText(cause))}
	if timeout >= 0 {
		lines = append(lines, "EXTEND_TIMEOUT_USEC="+sdnotify.Usec(drain+timeout+sdReleaseMargin))
	}
	g.sdNotify(lines...)
}

// sdReleaseMargin is what the shutdown may still take past the overall
// deadline: the overrun of the last hooks and releasing the lock.
const sdReleaseMargin = maxOverrun + forceReleaseTimeout

// sdHook tells systemd which hook runs and, while the overall deadline (the
// zero time for none) has not passed, extends the stop timeout to cover
// what is left of it.
func (g *GracefulShutdown) sdHook(name string, k, n int, deadline time.Time) {
	if g.sd == nil {
		return
	}
	lines := []string{fmt.Sprintf("STATUS=stopping: shutdown hook %q (%d of %d)", oneLine(name), k, n)}
	if left := time.Until(deadline); !deadline.IsZero() && left > 0 {
		lines = append(lines, "EXTEND_TIMEOUT_USEC="+sdnotify.Usec(left+sdReleaseMargin))
	}
	g.sdNotify(lines...)
}

// sdWatchdog sends WATCHDOG=1 every interval/2 while the instance is
// running and live by the liveness rule of the Healths built on its State
// (Critical checks pass), and stops when the shutdown begins. When the
// instance stops being live it says so in STATUS and sends nothing, so that
// systemd restarts it after the interval.
func (g *GracefulShutdown) sdWatchdog(interval time.Duration) {
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	live := true
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), interval/2)
		err := g.state.live(ctx)
		cancel()
		g.sdMu.Lock()
		if g.state.Status() == StatusRunning { // not before READY=1, not after STOPPING=1
			switch {
			case err == nil && live:
				g.sdSend("WATCHDOG=1")
			case err == nil:
				g.logger().Info("live again: systemd watchdog pings resume")
				g.sdSend("WATCHDOG=1", "STATUS=running")
			case live:
				g.logger().Error("not live: systemd watchdog pings stop", "err", err)
				g.sdSend("STATUS=not live, watchdog pings stopped: " + oneLine(errorText(err)))
			}
			live = err == nil
		}
		g.sdMu.Unlock()
	}
}

// oneLine replaces the newlines of s, which the protocol cannot carry.
func oneLine(s string) string { return strings.ReplaceAll(s, "\n", "; ") }
