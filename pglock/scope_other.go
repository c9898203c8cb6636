//go:build !linux

package pglock

// processScope names the set of processes whose pids this process sees.
// Outside Linux this package has no machine identity to compare, so the
// scope is never matched ("") and a successor always waits the previous
// holder's keep-alive interval after a crash.
func processScope() string { return "" }

// zombie is only known on Linux.
func zombie(int) bool { return false }
