//go:build linux

package pglock

import (
	"bytes"
	"os"
	"strconv"
)

// processScope names the set of processes whose pids this process sees:
// this boot of this machine (/proc/sys/kernel/random/boot_id, new at every
// boot and different on every machine, or /etc/machine-id when it is
// missing) and the PID namespace (the inode of /proc/self/ns/pid). The
// host name is not part of it: two machines may share a name, and the
// initial PID namespace has the same inode on every Linux machine. An
// acquirer only judges a previous holder's pid when the scopes match; ""
// (never matched) when the machine cannot be identified.
func processScope() string {
	id := readID("/proc/sys/kernel/random/boot_id")
	if id == "" {
		id = readID("/etc/machine-id")
	}
	ns, err := os.Readlink("/proc/self/ns/pid")
	if id == "" || err != nil {
		return ""
	}
	return "linux:" + id + " " + ns
}

// readID returns the trimmed content of an identity file, "" when it
// cannot be read or is empty.
func readID(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(bytes.TrimSpace(data))
}

// zombie reports whether pid has exited and waits to be reaped (state Z or
// X in /proc/<pid>/stat): its sockets are closed, so its locks are gone.
func zombie(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 || i+2 >= len(data) {
		return false
	}
	state := data[i+2]
	return state == 'Z' || state == 'X'
}
