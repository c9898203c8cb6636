//go:build !unix

package instancelock

import "os"

// hangupSignal is nil: there is no SIGHUP here.
func hangupSignal() os.Signal { return nil }

// notifySIGPIPE does nothing: there is no SIGPIPE here.
func notifySIGPIPE() {}
