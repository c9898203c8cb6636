//go:build !linux && !windows

package instancelock

// readRSS reports that the resident set size is not available here: the
// health response then omits it rather than pay for a costly probe.
func readRSS() (uint64, bool) { return 0, false }
