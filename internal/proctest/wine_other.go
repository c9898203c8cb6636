//go:build !windows

package proctest

// WineVersion returns "" here: only a Windows program can run under Wine.
func WineVersion() string { return "" }
