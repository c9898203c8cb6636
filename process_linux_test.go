package instancelock

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseStatStart(t *testing.T) {
	_, err := parseStatStart([]byte("1 (a) b) S 1 2 3"))
	assert.Error(t, err)
	_, err = parseStatStart([]byte("no paren"))
	assert.Error(t, err)
	n, err := parseStatStart([]byte("42 (we ird) ) R " + strings.Repeat("0 ", 18) + "777 0 0"))
	require.NoError(t, err)
	assert.Equal(t, uint64(777), n)
}

// A holder that was killed but not yet reaped (a zombie) is dead.
func TestZombieIsDead(t *testing.T) {
	cmd := helperCmd(t, "pidfile-sleep")
	require.NoError(t, cmd.Start())
	require.NoError(t, cmd.Process.Kill())
	pid := cmd.Process.Pid
	require.Eventually(t, func() bool { return zombie(pid) }, 10*time.Second, time.Millisecond)
	alive, err := osProcesses{}.Alive(pid)
	require.NoError(t, err)
	assert.False(t, alive, "a zombie is not alive")
	require.Error(t, cmd.Wait())
	assert.False(t, zombie(pid))
	assert.False(t, zombie(os.Getpid()))
}
