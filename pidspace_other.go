//go:build !linux && !darwin && !windows && !freebsd && !netbsd && !openbsd && !dragonfly

package instancelock

// thisPIDSpace: this platform offers no identity of its PID space here, so
// locks are told apart by hostname (see ProcessLock.Local).
func thisPIDSpace() string { return "" }
