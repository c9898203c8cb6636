//go:build linux

package instancelock

import (
	"os"
	"sync"
)

// seesAllLocks reports whether /proc/locks lists the flocks of every
// process of this kernel. The kernel lists only the locks of processes
// visible in the PID namespace of the /proc it is read from (Linux 4.9
// and later): from a container with its own PID namespace, a holder
// outside it (the host, another container sharing the volume) is not
// listed, while its flock still refuses every start. True only when this
// process, seen through /proc, is in the initial PID namespace, whose
// inode is fixed (PROC_PID_INIT_INO); false, so a lock is tried, when
// /proc cannot tell.
var seesAllLocks = sync.OnceValue(func() bool {
	ns, err := os.Readlink("/proc/self/ns/pid")
	return err == nil && ns == "pid:[4026531836]"
})
