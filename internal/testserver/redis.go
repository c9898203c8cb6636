package testserver

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Redis is a throwaway redis-server (Redis 7 on Debian 12), a child
// process of the test process on 127.0.0.1, without persistence (an empty
// --save, --appendonly no), with --maxmemory-policy noeviction and
// protected mode. Tests may Stop it (SIGKILL: it comes back empty, as after
// a crash) and Start it again on the same port, and Pause and Resume it
// (on Unix).
type Redis struct {
	bin, dir string
	port     int
	cmd      *exec.Cmd
	done     chan struct{} // closed when cmd has exited
}

// StartRedis starts a server in a new temporary directory. Close stops it
// and removes the directory.
func StartRedis() (*Redis, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, NotInstalled("redis-server", "redis-server", err)
	}
	dir, err := os.MkdirTemp("", "testserver-redis-")
	if err != nil {
		return nil, err
	}
	r := &Redis{bin: bin, dir: dir}
	for attempt := 1; ; attempt++ {
		if r.port, err = FreePort(); err == nil {
			err = r.Start()
		}
		if err == nil {
			return r, nil
		}
		if attempt == attempts { // the port may have been taken meanwhile
			os.RemoveAll(dir)
			return nil, err
		}
	}
}

// Addr returns the server's host:port.
func (r *Redis) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

// URL returns redis://Addr.
func (r *Redis) URL() string { return "redis://" + r.Addr() }

// Running reports whether the server was started and not stopped since.
func (r *Redis) Running() bool { return r.cmd != nil }

// Start starts the server on its port (a no-op when it runs) and waits up
// to 10 s until it answers PING.
func (r *Redis) Start() error {
	if r.cmd != nil {
		return nil
	}
	logPath := filepath.Join(r.dir, "redis.log")
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(r.bin, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction",
		"--dir", r.dir, "--daemonize", "no", "--protected-mode", "yes")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = dieWithParent(syscall.SIGKILL)
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	r.cmd, r.done = cmd, done
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		select {
		case <-done:
			r.cmd = nil
			tail, _ := os.ReadFile(logPath)
			return fmt.Errorf("redis-server exited at start:\n%s", tail)
		default:
		}
		err := ping(r.Addr())
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			r.Stop()
			return fmt.Errorf("redis-server does not answer PING: %w", err)
		}
	}
}

// ping sends PING to the server at addr and reads its +PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return errors.New("PING answered " + strings.TrimSpace(line)) // -LOADING while it starts
	}
	return nil
}

// Stop kills the server (SIGKILL, after a SIGCONT in case it was paused)
// and waits for it to exit. Everything in it is lost, as in a crash.
func (r *Redis) Stop() {
	if r.cmd == nil {
		return
	}
	resume(r.cmd.Process)
	r.cmd.Process.Kill()
	<-r.done
	r.cmd = nil
}

// Close stops the server and removes its directory.
func (r *Redis) Close() {
	r.Stop()
	os.RemoveAll(r.dir)
}

// Version returns what redis-server --version prints, "?" on error.
func (r *Redis) Version() string {
	out, err := exec.Command(r.bin, "--version").Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}
