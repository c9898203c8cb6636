//go:build !linux

package pglock

import "os"

// processScope names the set of processes whose pids this process sees:
// the host name (there are no PID namespaces to tell apart here).
func processScope() string {
	host, err := os.Hostname()
	if err != nil {
		return ""
	}
	return host
}

// zombie is only known on Linux.
func zombie(int) bool { return false }
