//go:build !unix

package testserver

import "os"

// resume: only Unix has SIGSTOP, so a server is never paused elsewhere.
func resume(*os.Process) {}
