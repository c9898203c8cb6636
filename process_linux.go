//go:build linux

package instancelock

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's start time. It is 100
// on every Linux architecture Go supports.
const clockTicks = 100

// bootInfo is read once: the boot id (which changes on every boot, so a
// start time from a previous boot never matches) and the boot time.
var bootInfo = sync.OnceValues(func() (string, time.Time) {
	id, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	var btime time.Time
	if stat, err := os.ReadFile("/proc/stat"); err == nil {
		for _, line := range strings.Split(string(stat), "\n") {
			if v, ok := strings.CutPrefix(line, "btime "); ok {
				if sec, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
					btime = time.Unix(sec, 0)
				}
			}
		}
	}
	return strings.TrimSpace(string(id)), btime
})

// processStart reads field 22 of /proc/<pid>/stat (start time in clock ticks
// since boot). The token is "linux:<boot id>:<ticks>".
func processStart(pid int) (string, time.Time, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, fs.ErrNotExist) {
		return "", time.Time{}, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	if err != nil {
		return "", time.Time{}, err
	}
	ticks, err := parseStatStart(data)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	id, btime := bootInfo()
	at := btime.Add(time.Duration(ticks) * time.Second / clockTicks)
	return "linux:" + id + ":" + strconv.FormatUint(ticks, 10), at, nil
}

// zombie reports whether pid is a zombie: state Z (or X, dead) in
// /proc/<pid>/stat.
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

// parseStatStart returns field 22 of a /proc/<pid>/stat line. The command
// name (field 2) is in parentheses and may itself contain spaces and
// parentheses, so fields are counted from the last ')'.
func parseStatStart(data []byte) (uint64, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, errors.New("no command name")
	}
	fields := strings.Fields(string(data[i+1:]))
	const startField = 22 - 3 // fields after ')' begin with field 3
	if len(fields) <= startField {
		return 0, errors.New("too few fields")
	}
	return strconv.ParseUint(fields[startField], 10, 64)
}
