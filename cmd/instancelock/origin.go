package main

import (
	"fmt"

	"github.com/ad5dec64/instancelock"
	"github.com/ad5dec64/instancelock/internal/pidspace"
)

// origin is where a PID file was written, as the command judges whether
// the kernel here answers for its lock.
type origin int

const (
	// originHere: this PID space, or an earlier boot of this machine
	// (ProcessLock.Local): its pid is checked here.
	originHere origin = iota
	// originBoot: another PID namespace (a container) of this very boot:
	// the same kernel holds its flock, so the library's verdict (Running)
	// is the kernel's answer, held or free, but its pid may mean another
	// process here.
	originBoot
	// originElsewhere: another machine or boot (or one that cannot be
	// told): a holder there would not show here, so only a lock seen held
	// says anything.
	originElsewhere
)

// originOf tells where h was written, by its pidSpace (or, in files
// without one, its Linux start token, which carries the boot id) against
// this process's.
func originOf(h instancelock.ProcessLock) origin {
	if h.Local() {
		return originHere
	}
	if theirs, ok := spaceOf(h); ok {
		if mine, ok := thisSpace(); ok && theirs.SameBoot(mine) {
			return originBoot
		}
	}
	return originElsewhere
}

// otherNamespace reports whether h, of originBoot, was written in another
// PID namespace than this process's (not just with another machine id),
// so that its pid is not a pid here.
func otherNamespace(h instancelock.ProcessLock) bool {
	theirs, ok1 := spaceOf(h)
	mine, ok2 := thisSpace()
	return !ok1 || !ok2 || theirs.NS == "" || theirs.NS != mine.NS
}

func spaceOf(h instancelock.ProcessLock) (pidspace.Space, bool) {
	if sp, ok := pidspace.Parse(h.PIDSpace); ok {
		return sp, true
	}
	return pidspace.FromStartToken(h.StartToken)
}

func thisSpace() (pidspace.Space, bool) {
	me, err := instancelock.Current(0)
	if err != nil {
		return pidspace.Space{}, false
	}
	return pidspace.Parse(me.PIDSpace)
}

// whereWritten says where a file of originElsewhere was written, naming
// its host only when that tells it apart from this one.
func whereWritten(h instancelock.ProcessLock) string {
	here := hostname()
	switch {
	case h.Hostname != "" && h.Hostname != here:
		return fmt.Sprintf("on host %s, not on this one (%s)", h.Hostname, here)
	case h.Hostname != "":
		return fmt.Sprintf("on another machine or boot, also named %s (its pidSpace is not this one's)", h.Hostname)
	}
	return "on another machine or boot (its pidSpace is not this one's)"
}
