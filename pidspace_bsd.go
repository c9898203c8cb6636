//go:build freebsd || netbsd || openbsd || dragonfly

package instancelock

import (
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// thisPIDSpace is "bsd:<boot time>::<host uuid>": sysctl kern.boottime and
// kern.hostuuid (FreeBSD, DragonFly; empty elsewhere). Jails share the
// host's PID numbers, so they share its PID space. Empty when the boot
// time cannot be read.
var thisPIDSpace = sync.OnceValue(func() string {
	tv, err := unix.SysctlTimeval("kern.boottime")
	if err != nil {
		return ""
	}
	id, _ := unix.Sysctl("kern.hostuuid")
	return "bsd:" + strconv.FormatInt(int64(tv.Sec), 10) + "." + strconv.FormatInt(int64(tv.Usec), 10) + "::" + id
})
