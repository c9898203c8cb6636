//go:build unix

package instancelock

import (
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ProcessLock.Gone is the one liveness rule other front ends (pglock) use:
// real processes, a dead pid, a reused one, this process, another PID space.
func TestProcessLockGone(t *testing.T) {
	sleeper := exec.Command("sleep", "300")
	require.NoError(t, sleeper.Start())
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	pid := sleeper.Process.Pid
	token, at, err := osProcesses{}.Start(pid)
	require.NoError(t, err)
	space, host := thisPIDSpace(), ""
	if space == "" {
		host, _ = os.Hostname()
	}
	me := func(pl ProcessLock) ProcessLock { pl.PIDSpace, pl.Hostname = space, host; return pl }

	assert.False(t, me(ProcessLock{PID: pid, StartedAt: at, StartToken: token}).Gone(), "alive, its own token")
	assert.False(t, me(ProcessLock{PID: pid, StartedAt: at}).Gone(), "alive, no token, started when written")
	if token != "" {
		assert.True(t, me(ProcessLock{PID: pid, StartedAt: at, StartToken: token + "x"}).Gone(), "pid reused: another token")
	}
	assert.True(t, me(ProcessLock{PID: pid, StartedAt: at.Add(-time.Hour)}).Gone(), "pid reused: started after it was written")
	assert.True(t, me(ProcessLock{PID: deadPID(t), StartedAt: time.Now()}).Gone(), "dead")
	assert.False(t, me(ProcessLock{PID: os.Getpid(), StartedAt: time.Now(), StartToken: "x"}).Gone(), "this process is not gone")
	assert.False(t, ProcessLock{PID: deadPID(t), StartedAt: time.Now(), PIDSpace: space + "-elsewhere", Hostname: "elsewhere.example"}.Gone(),
		"another PID space cannot be told")

	// A killed, not yet reaped process (a zombie) is gone.
	z := exec.Command("sleep", "300")
	require.NoError(t, z.Start())
	ztoken, zat, _ := osProcesses{}.Start(z.Process.Pid)
	require.NoError(t, z.Process.Kill())
	defer z.Wait()
	assert.Eventually(t, func() bool {
		return me(ProcessLock{PID: z.Process.Pid, StartedAt: zat, StartToken: ztoken}).Gone()
	}, 10*time.Second, time.Millisecond, "a zombie is gone")
}
