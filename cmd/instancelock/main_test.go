package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock"
)

// The tests build the command once (with -race when the tests run with
// -race) and run it as the operator would. When the tests measure coverage,
// the binary is built with coverage too and writes its counters where the
// test binary collects its own, so that the command's runs count.
//
// The test binary doubles as helper processes: with cliHelperEnv set,
// TestMain runs the named helper instead of the tests.

const cliHelperEnv = "INSTANCELOCK_CLI_HELPER"

var (
	binPath  string // the built command
	coverDir string // GOCOVERDIR for the command's runs, when measuring coverage
)

func TestMain(m *testing.M) {
	if name := os.Getenv(cliHelperEnv); name != "" {
		os.Exit(runHelper(name))
	}
	flag.Parse()
	dir, err := os.MkdirTemp("", "instancelock-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := 1
	if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

func build(dir string) error {
	binPath = filepath.Join(dir, "instancelock")
	if runtime.GOOS == "windows" {
		binPath += ".exe"
	}
	args := []string{"build", "-o", binPath}
	if raceEnabled() {
		args = append(args, "-race")
	}
	if mode := testing.CoverMode(); mode != "" {
		if f := flag.Lookup("test.gocoverdir"); f != nil && f.Value.String() != "" {
			coverDir = f.Value.String()
			args = append(args, "-cover", "-covermode="+mode, "-coverpkg=github.com/ad5dec64/instancelock/cmd/instancelock")
		}
	}
	out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// helpers are the helper processes of the tests, by name; test files of
// one system register theirs in init.
var helpers = map[string]func() int{}

// runHelper runs a helper process and returns its exit code.
func runHelper(name string) int {
	if fn, ok := helpers[name]; ok {
		return fn()
	}
	switch name {
	case "hold-ignoring-term":
		// Holds the lock of INSTANCELOCK_CLI_PATH and ignores SIGTERM, so
		// that only SIGKILL ends it; it says "locked" when it holds the
		// lock and exits when its standard input closes.
		signal.Ignore(syscall.SIGTERM)
		l, err := instancelock.Acquire(os.Getenv("INSTANCELOCK_CLI_PATH"))
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		defer l.Unlock()
		fmt.Println("locked")
		io.Copy(io.Discard, os.Stdin)
		return 0
	}
	fmt.Fprintf(os.Stderr, "unknown helper %q\n", name)
	return 2
}

// helperCmd returns a command that runs the helper name in a new process
// of the test binary, with env added to the environment.
func helperCmd(name string, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), cliHelperEnv+"="+name), env...)
	if raceEnabled() {
		cmd.Env = append(cmd.Env, raceEnv())
	}
	return cmd
}

// raceEnv turns off the race runtime's 1 s sleep at exit.
func raceEnv() string {
	return "GORACE=" + strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0")
}

// result is what one run of the command did.
type result struct {
	stdout, stderr string
	code           int
}

// cliCmd returns the command with args, ready to start.
func cliCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(binPath, args...)
	cmd.WaitDelay = 10 * time.Second // bounds Wait when a stray child keeps the output open
	cmd.Env = os.Environ()
	if coverDir != "" {
		cmd.Env = append(cmd.Env, "GOCOVERDIR="+coverDir)
	}
	if raceEnabled() {
		cmd.Env = append(cmd.Env, raceEnv())
	}
	return cmd
}

// runCLI runs the command to completion (failing the test after a generous
// 30 s) and returns what it did.
func runCLI(t *testing.T, args ...string) result {
	t.Helper()
	return runCmd(t, cliCmd(args...))
}

func runCmd(t *testing.T, cmd *exec.Cmd) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%v did not finish within 30s; stderr: %s", cmd.Args, stderr.String())
	}
	return result{stdout.String(), stderr.String(), exitStatus(cmd.ProcessState)}
}

// exitStatus is the exit code, or 128+N for a death by signal N, as a
// shell reports it.
func exitStatus(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// checkOneLineError fails the test unless stderr is exactly one line of
// error text: no usage dump, no stack trace.
func checkOneLineError(t *testing.T, r result, args []string) {
	t.Helper()
	if strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "\n") {
		t.Errorf("%q: stderr is not one line:\n%s", args, r.stderr)
	}
	for _, bad := range []string{"goroutine ", "panic", ".go:"} {
		if strings.Contains(r.stderr, bad) {
			t.Errorf("%q: stderr looks like a stack trace:\n%s", args, r.stderr)
		}
	}
	if !strings.HasPrefix(r.stderr, "instancelock") {
		t.Errorf("%q: stderr does not say who complains: %q", args, r.stderr)
	}
}

func TestHelpOnEveryCommand(t *testing.T) {
	for _, args := range [][]string{
		{"-h"}, {"--help"}, {"help"},
		{"status", "-h"}, {"stop", "-h"}, {"run", "-h"}, {"version", "-h"},
		{"help", "status"}, {"help", "stop"}, {"help", "run"}, {"help", "version"},
	} {
		r := runCLI(t, args...)
		if r.code != 0 || r.stderr != "" {
			t.Errorf("%q: exit %d, stderr %q", args, r.code, r.stderr)
		}
		if !strings.Contains(r.stdout, "Usage") || !strings.Contains(r.stdout, "Example") {
			t.Errorf("%q: no usage with examples:\n%s", args, r.stdout)
		}
	}
	r := runCLI(t, "run", "-h")
	for _, want := range []string{"names the wrapper", "125", "126", "127", "128+N", "-conflict-exit-code", "-wait", "-pidfile"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("run -h does not mention %q", want)
		}
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		r := runCLI(t, args...)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "instancelock ") || !strings.Contains(r.stdout, runtime.Version()) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
	}
}

// TestBadInput: every mistake is one line on stderr and a non-zero exit,
// and it changes nothing.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pid")
	const garbageText = "this is not a PID file\n"
	if err := os.WriteFile(garbage, []byte(garbageText), 0o644); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(dir, "huge.pid")
	if err := os.WriteFile(huge, bytes.Repeat([]byte("1"), instancelock.MaxFileSize+10), 0o644); err != nil {
		t.Fatal(err)
	}
	notDir := filepath.Join(garbage, "x.pid") // a path through a regular file
	missing := filepath.Join(dir, "missing.pid")

	cases := []struct {
		args []string
		code int
	}{
		{nil, 2},
		{[]string{"frobnicate"}, 2},
		{[]string{"help", "frobnicate"}, 2},
		{[]string{"version", "extra"}, 2},

		{[]string{"status"}, 4},
		{[]string{"status", "a.pid", "b.pid"}, 4},
		{[]string{"status", "-bogus", missing}, 4},
		{[]string{"status", garbage}, 4},
		{[]string{"status", huge}, 4},
		{[]string{"status", dir}, 4},
		{[]string{"status", notDir}, 4},
		{[]string{"status", "-json", garbage}, 4},

		{[]string{"stop"}, 2},
		{[]string{"stop", "a.pid", "b.pid"}, 2},
		{[]string{"stop", "-timeout", "soon", missing}, 2},
		{[]string{"stop", "-timeout", "-1s", missing}, 2},
		{[]string{"stop", "-signal", "FOO", missing}, 2},
		{[]string{"stop", "-signal", "0", missing}, 2},
		{[]string{"stop", "-signal", "", missing}, 2},
		{[]string{"stop", garbage}, 1},
		{[]string{"stop", huge}, 1},
		{[]string{"stop", dir}, 1},
		{[]string{"stop", notDir}, 1},

		{[]string{"run"}, 2},
		{[]string{"run", "-pidfile", missing}, 2},
		{[]string{"run", "-pidfile"}, 2},
		{[]string{"run", "-wait", "-1s", "--", "true"}, 2},
		{[]string{"run", "-wait", "long", "--", "true"}, 2},
		{[]string{"run", "-conflict-exit-code", "256", "--", "true"}, 2},
		{[]string{"run", "-conflict-exit-code", "-1", "--", "true"}, 2},
		{[]string{"run", "-pidfile", garbage, "--", "true"}, 125},
		{[]string{"run", "-pidfile", huge, "--", "true"}, 125},
		{[]string{"run", "-pidfile", dir, "--", "true"}, 125},
		{[]string{"run", "-pidfile", notDir, "--", "true"}, 125},
		{[]string{"run", "-pidfile", missing, "--", "no-such-command-instancelock-test"}, 127},
	}
	if runtime.GOOS != "windows" && os.Geteuid() != 0 {
		// Permissions do not stop root, so this case exists only for
		// other users.
		unreadable := filepath.Join(dir, "unreadable.pid")
		if err := os.WriteFile(unreadable, []byte(`{"pid":1,"startedAt":"2025-01-01T00:00:00.000Z"}`), 0o000); err != nil {
			t.Fatal(err)
		}
		cases = append(cases,
			struct {
				args []string
				code int
			}{[]string{"status", unreadable}, 4},
			struct {
				args []string
				code int
			}{[]string{"stop", unreadable}, 1})
	}
	for _, c := range cases {
		r := runCLI(t, c.args...)
		if r.code != c.code {
			t.Errorf("%q: exit %d, want %d; stderr: %s", c.args, r.code, c.code, r.stderr)
		}
		checkOneLineError(t, r, c.args)
	}
	if data, err := os.ReadFile(garbage); err != nil || string(data) != garbageText {
		t.Errorf("the garbage file was changed: %q, %v", data, err)
	}
	if fi, err := os.Stat(huge); err != nil || fi.Size() != instancelock.MaxFileSize+10 {
		t.Errorf("the huge file was changed: %v", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed run left %s behind: %v", missing, err)
	}
}

// lines are a process's standard output, line by line.
type lines chan string

// readLines reads r line by line until EOF, then closes it.
func readLines(r io.ReadCloser) lines {
	ch := make(lines, 100)
	go func() {
		defer close(ch)
		defer r.Close()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			ch <- sc.Text()
		}
	}()
	return ch
}

// expect waits (up to a generous 20 s) for a line that contains want.
func (ch lines) expect(t *testing.T, want string) string {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-ch:
			if !ok {
				t.Fatalf("output ended before a line with %q", want)
			}
			if strings.Contains(l, want) {
				return l
			}
		case <-timeout:
			t.Fatalf("no line with %q within 20s", want)
		}
	}
}

// proc is a started process, reaped as soon as it exits (as a shell or a
// service manager would), and killed when the test ends.
type proc struct {
	cmd  *exec.Cmd
	out  lines // standard output, if start was asked for it
	done chan struct{}
	code int // exit status, 128+N for a death by signal N; set when done is closed
}

// start starts cmd; with output, its standard output is read into p.out
// through a pipe that only closes when every process that inherited it
// (the command's children too) has closed it.
func start(t *testing.T, cmd *exec.Cmd, output bool) *proc {
	t.Helper()
	p := &proc{cmd: cmd, done: make(chan struct{})}
	var pw *os.File
	if output {
		pr, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		pw, cmd.Stdout, p.out = w, w, readLines(pr)
	}
	err := cmd.Start()
	if pw != nil {
		pw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		p.code = exitStatus(cmd.ProcessState)
		close(p.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// wait waits (up to a generous 20 s) for the process to exit and returns its
// exit status.
func (p *proc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%q did not exit within 20s", p.cmd.Args)
	}
	return 0
}

// running reports whether the process has not exited yet.
func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// eventually polls cond until it holds, failing the test after a generous
// 20 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting until %s", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}
