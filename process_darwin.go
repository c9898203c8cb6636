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

// zombie: not detected on this system; a zombie counts as alive until its
// parent reaps it.
func zombie(int) bool { return false }
