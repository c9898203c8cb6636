//go:build unix

package redislock

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock/internal/proctest"
	"github.com/redis/go-redis/v9"
)

// The tests run against a throwaway redis-server that TestMain starts on a
// free port of 127.0.0.1, without persistence (an empty --save, --appendonly no)
// and with --maxmemory-policy noeviction, as a child process that tests can
// stop, restart and pause. When redis-server is not installed the tests
// skip with the reason, unless CI=true, where TestMain fails.
//
// Tests that need real processes re-run this test binary with
// REDISLOCK_HELPER=name (internal/proctest); TestMain then runs
// helpers[name] instead of the tests. A helper reads its arguments from the environment and reports on
// stdout, one line per step.
var helpers = map[string]func(){}

const helperEnv = "REDISLOCK_HELPER"

// srv is the test server; nil when absent (then noServer says why).
var (
	srv      *server
	noServer string
)

func TestMain(m *testing.M) {
	proctest.RunHelper(helperEnv, helpers)
	redis.SetLogger(quiet{}) // the tests make the client fail to dial on purpose
	os.Exit(run(m))
}

// quiet discards the client's log lines.
type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

func run(m *testing.M) int {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		noServer = "redis-server is not installed (apt-get install -y redis-server): " + err.Error()
		if os.Getenv("CI") == "true" {
			fmt.Fprintln(os.Stderr, "FAIL: CI=true but", noServer)
			return 1
		}
		fmt.Println("SKIP: the Redis tests need a server:", noServer)
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "redislock-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	srv = &server{bin: bin, dir: dir}
	for attempt := 0; ; attempt++ {
		if srv.port, err = freePort(); err == nil {
			err = srv.start()
		}
		if err == nil {
			break
		}
		if attempt == 2 {
			fmt.Fprintln(os.Stderr, "FAIL: cannot start redis-server:", err)
			return 1
		}
	}
	defer srv.stop()
	fmt.Printf("redis-server %s on %s\n", srv.version(), srv.addr())
	return m.Run()
}

// server is a redis-server child process.
type server struct {
	bin  string
	dir  string
	port int
	cmd  *exec.Cmd
	done chan struct{}
}

func (s *server) addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }
func (s *server) url() string  { return "redis://" + s.addr() }

// start starts the server and waits until it answers PING.
func (s *server) start() error {
	log, err := os.OpenFile(filepath.Join(s.dir, "redis.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(s.bin, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction",
		"--dir", s.dir, "--daemonize", "no", "--protected-mode", "yes")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done
	c := redis.NewClient(&redis.Options{Addr: s.addr(), MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); ; {
		select {
		case <-done:
			return fmt.Errorf("redis-server exited at start (see %s)", filepath.Join(s.dir, "redis.log"))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			s.stop()
			return fmt.Errorf("redis-server does not answer: %w", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop kills the server (SIGKILL: without persistence, everything in it is
// lost, as in a crash) and waits for it to exit.
func (s *server) stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGCONT)
	s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// pause stops the server's process (SIGSTOP): connections stay open and
// requests get no answer. resume continues it.
func (s *server) pause()  { s.cmd.Process.Signal(syscall.SIGSTOP) }
func (s *server) resume() { s.cmd.Process.Signal(syscall.SIGCONT) }

func (s *server) version() string {
	out, err := exec.Command(s.bin, "--version").Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// needServer skips the test when there is no server (never in CI, where
// TestMain fails instead), and makes sure the server runs and is not
// paused, for a test that follows one that stopped it.
func needServer(t testing.TB) {
	t.Helper()
	if srv == nil {
		t.Skip(noServer)
	}
	if srv.cmd == nil {
		if err := srv.start(); err != nil {
			t.Fatal(err)
		}
	}
	srv.resume()
}

// restartServer kills the server and starts it again on the same port,
// empty.
func restartServer(t testing.TB) {
	t.Helper()
	srv.stop()
	if err := srv.start(); err != nil {
		t.Fatal(err)
	}
}

// rawClient returns a plain client of the test server, closed at the end
// of the test.
func rawClient(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: srv.addr()})
	t.Cleanup(func() { c.Close() })
	return c
}

// helperCmd returns a command that runs helpers[name] in a child process
// against the test server, with env added to the environment.
func helperCmd(t testing.TB, name string, env ...string) *exec.Cmd {
	t.Helper()
	return proctest.Command(helperEnv, name, append([]string{"REDISLOCK_URL=" + srv.url()}, env...)...)
}

// checkNoLeak fails the test if a goroutine of a Locker (the renewer, or a
// renewal in flight) still runs after the test's cleanups, after a grace
// period. Call it first in the test.
func checkNoLeak(t *testing.T) {
	t.Helper()
	proctest.CheckGoroutines(t, nil, func(stack string) bool { return strings.Contains(stack, "redislock.(*Locker)") })
}
