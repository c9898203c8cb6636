//go:build unix

package testserver

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) {
	code := m.Run()
	StopShared()
	os.Exit(code)
}

func listening(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
	}
	return err
}

func TestRedis(t *testing.T) {
	r, err := SharedRedis()
	Need(t, err)
	require.NoError(t, ping(r.Addr()))
	require.Equal(t, "redis://"+r.Addr(), r.URL())
	require.Contains(t, r.Version(), "Redis server")

	r.Pause()
	require.Error(t, ping(r.Addr()), "a paused server does not answer")
	r.Resume()
	require.NoError(t, ping(r.Addr()))

	addr := r.Addr()
	r.Stop()
	require.False(t, r.Running())
	require.Error(t, ping(addr), "a stopped server does not answer")
	r.Stop() // a second Stop does nothing
	require.NoError(t, r.Start())
	require.True(t, r.Running())
	require.Equal(t, addr, r.Addr(), "started again on the same port")
	require.NoError(t, ping(addr))
}

func TestPostgresAndBouncer(t *testing.T) {
	pg, err := SharedPostgres()
	Need(t, err)
	require.NoError(t, listening(pg.Addr))
	require.Equal(t, "postgres://postgres@"+pg.Addr+"/postgres?sslmode=disable", pg.URL)
	require.NoError(t, pg.Restart())
	require.NoError(t, listening(pg.Addr), "listening again after Restart")

	b, err := SharedBouncer()
	Need(t, err)
	require.NoError(t, listening(b.Addr))
	require.Equal(t, "postgres://postgres@"+b.Addr+"/transaction?sslmode=disable", b.URL("transaction"))
	again, err := SharedBouncer()
	require.NoError(t, err)
	require.Same(t, b, again, "one shared PgBouncer per process")
}

// A server that is not installed: its error says what to install, and it
// is a reason to skip only outside CI.
func TestNotInstalled(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := StartRedis()
	require.ErrorIs(t, err, ErrNotInstalled)
	require.ErrorContains(t, err, "apt-get install -y redis-server")
	if _, serr := os.Stat("/usr/sbin/pgbouncer"); serr != nil { // else found there without PATH
		_, berr := StartBouncer(&Postgres{Addr: "127.0.0.1:1"})
		require.ErrorIs(t, berr, ErrNotInstalled)
	}

	t.Setenv("CI", "true")
	require.False(t, Skippable(err), "CI=true: a missing server fails")
	t.Setenv("CI", "")
	require.True(t, Skippable(NotInstalled("x", "x", errors.New("no x"))))
	require.False(t, Skippable(errors.New("initdb: failed")), "only a missing server skips")
	require.False(t, Skippable(nil))
}
