package instancelock

// The helper processes of GracefulShutdown's child-process tests, shared by
// the tests of every system (shutdown_unix_test.go, shutdown_windows_test.go).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock/internal/proctest"
)

func init() {
	helpers["shutdown-child"] = shutdownChild
	helpers["shutdown-idle"] = shutdownIdle
}

// shutdownChild is a small backend: it acquires SHUTDOWN_PIDFILE, registers
// the hooks of SHUTDOWN_HOOKS ("name:kind,…", kinds below), starts the
// helper with the default signals, prints "ready", waits for the shutdown,
// prints a "done" line and exits with ExitCode. Every hook prints
// "hook NAME state=… pidfile=…" when it is called. SHUTDOWN_TIMEOUT and
// SHUTDOWN_HOOK_TIMEOUT set the deadlines, SHUTDOWN_LOG=1 logs to stderr,
// SHUTDOWN_ON_STDIN_EOF=1 calls Shutdown when standard input closes,
// SHUTDOWN_LOCK_AFTER_START=1 takes the lock with Lock(g.Context()) after
// Start (a standby's order), SHUTDOWN_NO_REPUBLISH=1 sets DisableRepublish,
// SHUTDOWN_SIGNALS=none sets Signals to an empty list.
//
// A human can run it too:
//
//	go test -c -o /tmp/il.test
//	INSTANCELOCK_HELPER=shutdown-child SHUTDOWN_PIDFILE=/tmp/il.pid SHUTDOWN_HOOKS=db:slow,http:ok SHUTDOWN_LOG=1 /tmp/il.test
//	# then Ctrl-C (once, or twice), or kill -TERM from another terminal
func shutdownChild() {
	lk, err := New(os.Getenv("SHUTDOWN_PIDFILE"))
	if err != nil {
		fmt.Println("new:", err)
		os.Exit(3)
	}
	lk.DisableRepublish = os.Getenv("SHUTDOWN_NO_REPUBLISH") == "1"
	lockAfterStart := os.Getenv("SHUTDOWN_LOCK_AFTER_START") == "1"
	if !lockAfterStart {
		if err := lk.TryLock(); err != nil {
			fmt.Println("acquire:", err)
			os.Exit(3)
		}
	}
	g := NewGracefulShutdown(lk)
	g.Timeout = sdEnvDuration("SHUTDOWN_TIMEOUT")
	g.HookTimeout = sdEnvDuration("SHUTDOWN_HOOK_TIMEOUT")
	if os.Getenv("SHUTDOWN_LOG") == "1" {
		g.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if os.Getenv("SHUTDOWN_SIGNALS") == "none" {
		g.Signals = []os.Signal{}
	}
	if os.Getenv("SHUTDOWN_HANGUP") == "1" {
		g.Hangup = func() { fmt.Printf("hangup state=%s\n", g.State().Status()) }
	}
	for _, spec := range strings.Split(os.Getenv("SHUTDOWN_HOOKS"), ",") {
		if spec != "" {
			name, kind, _ := strings.Cut(spec, ":")
			g.Add(name, sdChildHook(g, lk.Path(), name, kind))
		}
	}
	if err := g.Start(context.Background()); err != nil {
		fmt.Println("start:", err)
		os.Exit(3)
	}
	if lockAfterStart { // a standby: signal handling first, then wait for the lock
		if err := lk.Lock(g.Context()); err != nil {
			fmt.Println("lock:", err)
			os.Exit(3)
		}
	}
	if err := g.State().Set(StatusRunning); err != nil {
		fmt.Println("state:", err)
		os.Exit(3)
	}
	if os.Getenv("SHUTDOWN_ON_STDIN_EOF") == "1" {
		// What a Windows service's stop request, or any other trigger
		// the host wires up, does: call Shutdown.
		go func() {
			io.Copy(io.Discard, os.Stdin)
			g.Shutdown(nil)
		}()
	}
	fmt.Println("ready")
	err = g.Wait()
	_, statErr := os.Lstat(lk.Path())
	fmt.Printf("done state=%s cause=%v pidfile=%t err=%s\n", g.State().Status(), context.Cause(g.Context()),
		statErr == nil, strings.ReplaceAll(sdErrString(err), "\n", " | "))
	os.Exit(g.ExitCode())
}

// sdChildHook returns a hook of the given kind: ok, err (returns an error),
// panic, slow (waits for its context, returns ctx.Err()), hang (ignores its
// context and never returns) or reentrant (calls g.Shutdown, prints
// "reentrant returned: ERR" and returns nil).
func sdChildHook(g *GracefulShutdown, path, name, kind string) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := os.Lstat(path)
		fmt.Printf("hook %s state=%s pidfile=%t\n", name, g.State().Status(), err == nil)
		switch kind {
		case "ok":
			return nil
		case "err":
			return errors.New("failed on purpose")
		case "panic":
			panic("panicked on purpose")
		case "slow":
			<-ctx.Done()
			return ctx.Err()
		case "hang":
			select {}
		case "reentrant":
			err := g.Shutdown(errors.New("asked again from a hook"))
			fmt.Printf("reentrant returned: %v\n", err)
			return nil
		}
		return fmt.Errorf("unknown hook kind %q", kind)
	}
}

func sdEnvDuration(name string) time.Duration {
	d, _ := time.ParseDuration(os.Getenv(name))
	return d
}

// shutdownIdle creates a GracefulShutdown and, with SHUTDOWN_CYCLE=1, starts
// it and runs a whole shutdown; then it prints "idle" and sleeps. A signal
// must then kill it: nothing may remain installed.
func shutdownIdle() {
	g := NewGracefulShutdown(nil)
	if os.Getenv("SHUTDOWN_CYCLE") == "1" {
		if err := g.Start(context.Background()); err != nil {
			fmt.Println("start:", err)
			os.Exit(3)
		}
		if err := g.Shutdown(nil); err != nil {
			fmt.Println("shutdown:", err)
			os.Exit(3)
		}
	}
	fmt.Println("idle")
	time.Sleep(time.Minute)
	os.Exit(4)
}

// sdChild is a running shutdownChild.
type sdChild struct {
	t    *testing.T
	cmd  *exec.Cmd
	lr   *proctest.Lines
	path string
	errb *proctest.SyncBuffer
}

func sdStartChild(t *testing.T, env ...string) *sdChild {
	t.Helper()
	return sdStartChildStderr(t, nil, env...)
}

// sdStartChildStderr is sdStartChild with the child's stderr going to
// stderr instead of the test's buffer, when stderr is not nil.
func sdStartChildStderr(t *testing.T, stderr *os.File, env ...string) *sdChild {
	t.Helper()
	path := filepath.Join(t.TempDir(), "app.pid")
	cmd := helperCmd(t, "shutdown-child", append([]string{"SHUTDOWN_PIDFILE=" + path, "SHUTDOWN_LOG=1"}, env...)...)
	sdPrepareChild(cmd)
	c := &sdChild{t: t, cmd: cmd, path: path, errb: &proctest.SyncBuffer{}}
	cmd.Stderr = c.errb
	if stderr != nil {
		cmd.Stderr = stderr
	}
	c.lr = proctest.NewLines(t, cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("child's log:\n%s", c.errb.String())
		}
	})
	if l := c.lr.Next(sdLiveness); l != "ready" {
		t.Fatalf("child said %q, want ready", l)
	}
	reader, err := New(path)
	if err != nil {
		t.Fatal(err)
	}
	holder, err := reader.Holder()
	if err != nil || holder.PID != cmd.Process.Pid {
		t.Fatalf("the child does not hold the PID file: %+v, %v", holder, err)
	}
	return c
}

// finish reads the child's output to the end, waits for it, and returns its
// lines and exit code (-1 if it died of a signal).
func (c *sdChild) finish() ([]string, int) {
	c.t.Helper()
	var lines []string
	deadline := time.Now().Add(sdLiveness)
	for {
		l, err := c.lr.Line(time.Until(deadline))
		if err == proctest.ErrClosed {
			break
		}
		if err != nil {
			c.t.Fatalf("the child did not exit; it said %q", lines)
		}
		lines = append(lines, l)
	}
	err := c.cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		c.t.Fatal(err)
	}
	return lines, c.cmd.ProcessState.ExitCode()
}

func (c *sdChild) pidFileGone() {
	c.t.Helper()
	if sdFileExists(c.t, c.path) {
		c.t.Errorf("the PID file %s is still there", c.path)
	}
}
