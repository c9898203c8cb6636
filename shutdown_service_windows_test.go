//go:build windows

package instancelock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/mgr"
)

const testServiceFlag = "-instancelock-test-service"

// runTestService is the test binary started as a service by the service
// control manager (arguments: the flag, a directory, the service name): a
// backend that holds DIR\app.pid, with one hook that writes DIR\hook, run
// by RunWindowsService. It writes RunWindowsService's error to DIR\done
// and exits with ExitCode.
func runTestService() {
	if len(os.Args) != 4 || os.Args[1] != testServiceFlag {
		return
	}
	dir, name := os.Args[2], os.Args[3]
	fail := func(err error) {
		os.WriteFile(filepath.Join(dir, "done"), []byte(err.Error()), 0o644)
		os.Exit(3)
	}
	path := filepath.Join(dir, "app.pid")
	lk, err := Acquire(path)
	if err != nil {
		fail(err)
	}
	g := NewGracefulShutdown(lk)
	g.Add("hook", func(context.Context) error {
		_, err := os.Lstat(path)
		return os.WriteFile(filepath.Join(dir, "hook"), []byte(fmt.Sprintf("pidfile=%t state=%s", err == nil, g.State().Status())), 0o644)
	})
	if err := g.Start(context.Background()); err != nil {
		fail(err)
	}
	err = g.RunWindowsService(name)
	os.WriteFile(filepath.Join(dir, "done"), []byte(fmt.Sprint(err)), 0o644)
	os.Exit(g.ExitCode())
}

// The service control manager's stop request runs the hooks, then releases
// the lock, and the service stops with exit code 0.
func TestShutdownWindowsServiceStop(t *testing.T) {
	m, err := mgr.Connect()
	if err != nil {
		t.Skipf("no access to the service control manager (installing a service needs an administrator): %v", err)
	}
	defer m.Disconnect()
	dir := t.TempDir()
	name := fmt.Sprintf("instancelock-test-%d", os.Getpid())
	exe, err := os.Executable()
	require.NoError(t, err)
	s, err := m.CreateService(name, exe, mgr.Config{StartType: mgr.StartManual, DisplayName: "instancelock test " + name},
		testServiceFlag, dir, name)
	if errors.Is(err, windows.ERROR_ACCESS_DENIED) {
		t.Skipf("installing a service needs an administrator: %v", err)
	}
	require.NoError(t, err)
	t.Cleanup(func() {
		s.Control(svc.Stop)
		s.Delete()
		s.Close()
	})
	require.NoError(t, s.Start())
	st := waitServiceState(t, s, svc.Running)

	path := filepath.Join(dir, "app.pid")
	l, err := New(path)
	require.NoError(t, err)
	holder, err := l.Holder()
	require.NoError(t, err)
	assert.Equal(t, int(st.ProcessId), holder.PID, "the service holds the lock")
	assert.ErrorIs(t, l.TryLock(), ErrAlreadyRunning)

	_, err = s.Control(svc.Stop)
	require.NoError(t, err)
	st = waitServiceState(t, s, svc.Stopped)
	assert.Zero(t, st.Win32ExitCode, "exit code")
	assert.Zero(t, st.ServiceSpecificExitCode, "service-specific exit code")
	hook, err := os.ReadFile(filepath.Join(dir, "hook"))
	require.NoError(t, err, "the hook did not run")
	assert.Equal(t, "pidfile=true state=stopping", string(hook), "the hook ran before the lock was released")
	done, err := os.ReadFile(filepath.Join(dir, "done"))
	require.NoError(t, err)
	assert.Equal(t, "<nil>", string(done))
	assert.NoFileExists(t, path, "the lock was released")
	require.NoError(t, l.TryLock(), "the next instance starts")
	require.NoError(t, l.Unlock())
}

// waitServiceState polls (every 20 ms, up to a generous 20 s) until the
// service is in state, and returns its status.
func waitServiceState(t *testing.T, s *mgr.Service, state svc.State) svc.Status {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st, err := s.Query()
		require.NoError(t, err)
		if st.State == state {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("the service is in state %d, not %d", st.State, state)
		}
	}
}

// Outside the service control manager RunWindowsService fails at once.
func TestRunWindowsServiceNotAService(t *testing.T) {
	g := NewGracefulShutdown(nil)
	err := g.RunWindowsService("x")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "service control manager")
}
