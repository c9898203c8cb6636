//go:build unix

package testserver

import (
	"os"
	"syscall"
)

// Pause stops the server's process (SIGSTOP): its connections stay open
// and requests get no answer until Resume.
func (r *Redis) Pause() { r.cmd.Process.Signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT); a no-op when it is not
// running.
func (r *Redis) Resume() {
	if r.cmd != nil {
		resume(r.cmd.Process)
	}
}

func resume(p *os.Process) { p.Signal(syscall.SIGCONT) }
