//go:build !linux

package bench

// stopFleetServers: the fleet benchmarks run on Linux only.
func stopFleetServers() {}
