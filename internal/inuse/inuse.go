// Package inuse names the error of removing or renaming a file that an
// open handle keeps in place, as Windows reports it (a sharing violation).
// The Locker recognizes it, and a fake file system with Windows' rules
// (instancelocktest.MemFS) returns it, on every system.
package inuse

import "errors"

// Is reports whether err says that an open handle keeps a file from being
// removed or renamed: it matches Err.
func Is(err error) bool { return errors.Is(err, Err) }
