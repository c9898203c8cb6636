//go:build windows

package inuse

import "golang.org/x/sys/windows"

// Err is the error of removing or renaming a file that another handle has
// open without FILE_SHARE_DELETE: a sharing violation.
var Err error = windows.ERROR_SHARING_VIOLATION
