//go:build linux

package pglock

import (
	"bytes"
	"os"
	"strconv"
)

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
