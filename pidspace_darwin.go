//go:build darwin

package instancelock

import (
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// thisPIDSpace is "darwin:<boot session uuid>::" (sysctl
// kern.bootsessionuuid, new at every boot), or "darwin:<sec>.<usec>::"
// from kern.boottime where that sysctl is missing. macOS has no PID
// namespaces, and no machine id is read: a file of an earlier boot counts
// as another machine's.
var thisPIDSpace = sync.OnceValue(func() string {
	if id, err := unix.Sysctl("kern.bootsessionuuid"); err == nil && id != "" {
		return "darwin:" + id + "::"
	}
	if tv, err := unix.SysctlTimeval("kern.boottime"); err == nil {
		return "darwin:" + strconv.FormatInt(int64(tv.Sec), 10) + "." + strconv.FormatInt(int64(tv.Usec), 10) + "::"
	}
	return ""
})
