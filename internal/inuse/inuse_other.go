//go:build !unix && !windows

package inuse

import "errors"

// Err is what a fake file system with Windows' rules returns where Windows
// reports a sharing violation.
var Err = errors.New("the file is in use by another handle")
