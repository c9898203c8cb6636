package instancelock

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The content template gives the very bytes MarshalJSON gives.
func TestContentIsMarshalJSON(t *testing.T) {
	l, err := newWith(t.TempDir()+"/x.pid", func(l *Locker) { l.Port = 8080 })
	require.NoError(t, err)
	for _, at := range []time.Time{time.Now(), time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 999e6, time.UTC), stampSentinel} {
		info := ProcessLock{PID: 42, StartedAt: at.UTC().Truncate(time.Millisecond), Port: 8080, GoVersion: goVersion,
			InstanceID: l.id, Hostname: "h\"ost", PIDSpace: l.pidSpace, StartToken: "tok"}
		got, err := l.content(info)
		require.NoError(t, err)
		want, err := info.MarshalJSON()
		require.NoError(t, err)
		require.Equal(t, string(want)+"\n", string(got))
	}
	// A content in which the placeholder cannot be found once is marshalled.
	l2, _ := New(t.TempDir() + "/y.pid")
	info := ProcessLock{PID: 1, StartedAt: time.Now().UTC().Truncate(time.Millisecond), Hostname: stampSentinel.Format(timeLayout)}
	got, err := l2.content(info)
	require.NoError(t, err)
	want, _ := info.MarshalJSON()
	require.Equal(t, string(want)+"\n", string(got))
}
