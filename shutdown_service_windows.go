//go:build windows

package instancelock

import (
	"fmt"
	"time"

	"golang.org/x/sys/windows/svc"
)

func (g *GracefulShutdown) runWindowsService(name string) error {
	if err := svc.Run(name, serviceHandler{g}); err != nil {
		return fmt.Errorf("instancelock: RunWindowsService(%q) (was the process started by the service control manager?): %w", name, err)
	}
	return g.Wait()
}

// stopWaitHint is the time a stop is expected to take, for the service
// control manager: the drain delay, the overall deadline (the default one
// when there is none: only an estimate then) and a second for the release.
func (g *GracefulShutdown) stopWaitHint() time.Duration {
	timeout := g.timeout()
	if timeout < 0 {
		timeout = defaultShutdownTimeout
	}
	return max(g.DrainDelay, 0) + timeout + time.Second
}

// serviceHandler answers the service control manager for a
// GracefulShutdown.
type serviceHandler struct{ g *GracefulShutdown }

// Execute reports the service running, begins the shutdown on a stop or
// shutdown request (without blocking: the manager's interrogations are
// still answered while the hooks run), and returns the exit code once the
// shutdown has finished.
func (h serviceHandler) Execute(_ []string, reqs <-chan svc.ChangeRequest, status chan<- svc.Status) (bool, uint32) {
	stopPending := svc.Status{State: svc.StopPending, WaitHint: uint32(h.g.stopWaitHint() / time.Millisecond)}
	status <- svc.Status{State: svc.Running, Accepts: svc.AcceptStop | svc.AcceptShutdown}
	begun := h.g.Context().Done()
	for {
		select {
		case c := <-reqs:
			switch c.Cmd {
			case svc.Interrogate:
				status <- c.CurrentStatus
			case svc.Stop, svc.Shutdown:
				h.g.logger().Info("service stop requested", "service control", c.Cmd)
				go h.g.Shutdown(nil)
			}
		case <-begun: // by the request above, or by anything else
			begun = nil
			status <- stopPending
		case <-h.g.Done():
			if code := h.g.ExitCode(); code != 0 {
				return true, uint32(code)
			}
			return false, 0
		}
	}
}
