// Package proctest runs a test binary again as a helper process and reads
// what the helper says, for the tests of every module of instancelock.
//
// A test package registers helpers by name, dispatches them first thing in
// TestMain, and starts them with Command:
//
//	func TestMain(m *testing.M) {
//		proctest.RunHelper("MYPKG_HELPER", helpers)
//		os.Exit(m.Run())
//	}
//
//	cmd := proctest.Command("MYPKG_HELPER", "holder", "PIDFILE="+path)
//	out := proctest.NewLines(t, cmd)
//	// cmd.Start(), then out.Expect("locked", 10*time.Second)
//
// A helper reads its arguments from the environment and reports on stdout,
// one line per step.
package proctest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// RunHelper runs helpers[name] and exits the process with status 0 when the
// environment variable envVar holds a name; with a name that helpers lacks
// it prints an error on stderr and exits with status 2. When envVar is
// empty or unset it returns at once, so that TestMain goes on to run the
// tests. Call it first in TestMain.
func RunHelper(envVar string, helpers map[string]func()) {
	name := os.Getenv(envVar)
	if name == "" {
		return
	}
	fn, ok := helpers[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown helper %q\n", name)
		os.Exit(2)
	}
	fn()
	os.Exit(0)
}

// Command returns a command, not started, that runs the current test binary
// as the helper name (envVar=name, for RunHelper) with env added to the
// environment, no tests and no benchmarks. The helper's stderr is the
// test's. Under -race the helper skips the race runtime's one-second sleep
// at exit (GORACE atexit_sleep_ms=0, added to any GORACE already set).
func Command(envVar, name string, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	cmd.Env = append(os.Environ(), append([]string{envVar + "=" + name, "GORACE=" + gorace}, env...)...)
	cmd.Stderr = os.Stderr
	return cmd
}

// Start starts cmd with a pipe to its stdin and its stdout read by a Lines
// (see NewLines), failing t (Fatal) when it cannot. When the test ends it
// closes the pipe, kills the helper and waits for it.
func Start(t testing.TB, cmd *exec.Cmd) (stdin io.Writer, out *Lines) {
	t.Helper()
	w, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out = NewLines(t, cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close(); cmd.Process.Kill(); cmd.Wait() })
	return w, out
}

// ErrClosed is returned by Lines.Line when the helper has closed its
// output and every line has been read.
var ErrClosed = errors.New("helper closed its output")

// Lines reads a helper's stdout line by line, in the background from the
// moment it is made, so that a helper never blocks on a full pipe while the
// test waits for another helper.
type Lines struct {
	t     testing.TB // nil when made by ReadLines
	lines chan string
}

// ReadLines connects to cmd's stdout, which must not be set yet; call it
// before cmd.Start. It returns the error of cmd.StdoutPipe.
func ReadLines(cmd *exec.Cmd) (*Lines, error) {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	l := &Lines{lines: make(chan string, 100)}
	go func() {
		defer close(l.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			l.lines <- sc.Text()
		}
	}()
	return l, nil
}

// NewLines is ReadLines for a test: it fails t at once on error, and Next
// and Expect of the result fail t instead of returning errors.
func NewLines(t testing.TB, cmd *exec.Cmd) *Lines {
	t.Helper()
	l, err := ReadLines(cmd)
	if err != nil {
		t.Fatal(err)
	}
	l.t = t
	return l
}

// Line returns the next line, ErrClosed when the helper has closed its
// output, or an error when no line comes within d.
func (l *Lines) Line(d time.Duration) (string, error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case s, ok := <-l.lines:
		if !ok {
			return "", ErrClosed
		}
		return s, nil
	case <-timer.C:
		return "", fmt.Errorf("no line from the helper within %v", d)
	}
}

// Next returns the next line, or fails the test (Fatal) when none comes
// within d or the helper closed its output. Only for Lines made by
// NewLines.
func (l *Lines) Next(d time.Duration) string {
	l.t.Helper()
	s, err := l.Line(d)
	if err != nil {
		l.t.Fatal(err)
	}
	return s
}

// Expect reads lines until one starts with prefix and returns it; it fails
// the test (Fatal) when none comes within d in all or the helper closed its
// output. Only for Lines made by NewLines.
func (l *Lines) Expect(prefix string, d time.Duration) string {
	l.t.Helper()
	deadline := time.Now().Add(d)
	for {
		s := l.Next(time.Until(deadline))
		if strings.HasPrefix(s, prefix) {
			return s
		}
	}
}
