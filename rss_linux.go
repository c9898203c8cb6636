//go:build linux

package instancelock

import (
	"os"

	"golang.org/x/sys/unix"
)

var pageSize = uint64(os.Getpagesize())

// readRSS returns the resident set size: field 2 of /proc/self/statm
// (resident pages) times the page size. It uses raw system calls into a
// stack buffer, so it allocates nothing; it still costs three system calls,
// which is why the caller samples it.
func readRSS() (uint64, bool) {
	fd, err := unix.Open("/proc/self/statm", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	for err == unix.EINTR {
		fd, err = unix.Open("/proc/self/statm", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return 0, false
	}
	defer unix.Close(fd)
	var buf [128]byte
	n, err := unix.Read(fd, buf[:])
	for err == unix.EINTR {
		n, err = unix.Read(fd, buf[:])
	}
	if err != nil || n <= 0 {
		return 0, false
	}
	pages, ok := parseStatmResident(buf[:n])
	return pages * pageSize, ok
}

// parseStatmResident returns the second space-separated field of a
// /proc/<pid>/statm line ("size resident shared text lib data dt").
func parseStatmResident(b []byte) (uint64, bool) {
	i := 0
	for i < len(b) && b[i] != ' ' {
		i++
	}
	i++
	var v uint64
	digits := 0
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		v = v*10 + uint64(b[i]-'0')
		digits++
	}
	return v, digits > 0 && digits < 20
}
