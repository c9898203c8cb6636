//go:build darwin

package instancelock

import (
	"fmt"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// processStart reads p_starttime from the kern.proc.pid sysctl. The token is
// "darwin:<seconds>.<microseconds>".
func processStart(pid int) (string, time.Time, error) {
	kp, err := unix.SysctlKinfoProc("kern.proc.pid", pid)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sysctl kern.proc.pid %d: %w", pid, err)
	}
	st := kp.Proc.P_starttime
	if st.Sec == 0 && st.Usec == 0 {
		return "", time.Time{}, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	at := time.Unix(st.Sec, int64(st.Usec)*1000)
	return "darwin:" + strconv.FormatInt(st.Sec, 10) + "." + strconv.FormatInt(int64(st.Usec), 10), at, nil
}

// sZomb is the p_stat of a zombie (SZOMB in <sys/proc.h>).
const sZomb = 5

// zombie reports whether pid is a zombie: dead, not yet reaped.
func zombie(pid int) bool {
	kp, err := unix.SysctlKinfoProc("kern.proc.pid", pid)
	return err == nil && kp.Proc.P_stat == sZomb
}
