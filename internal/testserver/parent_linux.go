package testserver

import "syscall"

// dieWithParent makes a child server receive sig when the test process
// dies, so that a killed test run leaves no server behind.
func dieWithParent(sig syscall.Signal) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: sig}
}
