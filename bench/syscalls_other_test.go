//go:build !linux

package bench

import "errors"

// newSyscallsHandle: the row is Linux's (see syscalls_linux_test.go).
func newSyscallsHandle(string) (*handle, error) {
	return nil, errors.ErrUnsupported
}
