package instancelock

// RunWindowsService runs the process as the Windows service name, for a
// program that the service control manager starts: call it after Start,
// in place of Wait. It reports the service running; on the manager's stop
// request, or its shutdown notice when Windows shuts down, it reports
// StopPending (with DrainDelay, Timeout and a second as the wait hint; 5 s
// stands for Timeout when it is negative) and runs
// Shutdown(nil): the hooks in reverse order, then the release of the lock.
// A shutdown that begins otherwise (the lock is lost, Shutdown is called
// from code) ends the service too. It returns once the shutdown has
// finished and the service is reported stopped, with ExitCode as the
// service's exit code (0, or 1 as a service-specific code), and returns
// Wait's error.
//
// It fails at once when the process was not started by the service control
// manager, and with errors.ErrUnsupported on other systems (which have no
// service control manager; they stop services with signals, handled by
// Start).
func (g *GracefulShutdown) RunWindowsService(name string) error {
	return g.runWindowsService(name)
}
