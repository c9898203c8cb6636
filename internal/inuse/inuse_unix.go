//go:build unix

package inuse

import "syscall"

// Err: on Unix an open file never keeps a name from being removed or
// replaced; a fake file system with Windows' rules returns EBUSY where
// Windows reports a sharing violation.
var Err error = syscall.EBUSY
