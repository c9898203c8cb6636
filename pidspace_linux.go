//go:build linux

package instancelock

import (
	"os"
	"strings"
	"sync"
)

// thisPIDSpace is "linux:<boot id>:<pid namespace inode>:<machine id>".
// The boot id (/proc/sys/kernel/random/boot_id) tells boots apart, and
// machines (it is random at every boot); the inode of /proc/self/ns/pid
// tells the PID namespaces (containers) of one kernel apart: the inode
// alone is not enough, the initial PID namespace has the same inode on
// every host. The machine id (/etc/machine-id, empty when missing, as in
// many containers) tells an earlier boot of this machine from another
// machine (see sameSpace). Empty when /proc cannot tell.
var thisPIDSpace = sync.OnceValue(func() string {
	id, _ := bootInfo()
	ns, err := os.Readlink("/proc/self/ns/pid") // "pid:[4026531836]"
	if id == "" || err != nil {
		return ""
	}
	ns = strings.TrimSuffix(strings.TrimPrefix(ns, "pid:["), "]")
	var machine []byte
	for _, p := range []string{"/etc/machine-id", "/var/lib/dbus/machine-id"} {
		if machine, err = os.ReadFile(p); err == nil {
			break
		}
	}
	return "linux:" + id + ":" + ns + ":" + strings.TrimSpace(string(machine))
})
