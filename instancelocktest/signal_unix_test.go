//go:build unix

package instancelocktest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock"
	"github.com/ad5dec64/instancelock/internal/proctest"
)

// A signalCase is a GracefulShutdown, the signals it gets one after the
// other, and what each does: the lines the program says (its Hangup and
// its hook say them) and, for the last, the status the process ends with.
// TestSignalLikeReal plays each with real signals to a child process and
// with Signal in the test process.
type signalCase struct {
	name    string
	noStart bool        // the program does not call Start
	signals []os.Signal // GracefulShutdown.Signals
	hangup  bool        // Hangup is set
	block   bool        // the hook blocks: a second signal finds the shutdown running
	steps   []signalStep
	status  int // how the process ends after the last step; -1: still running
}

type signalStep struct {
	sig  syscall.Signal
	says []string
}

var signalCases = []signalCase{
	{name: "SIGTERM shuts down", steps: []signalStep{{syscall.SIGTERM, []string{"hook received signal terminated"}}}, status: 0},
	{name: "SIGHUP calls Hangup", hangup: true, steps: []signalStep{
		{syscall.SIGHUP, []string{"hangup"}},
		{syscall.SIGHUP, []string{"hangup"}},
		{syscall.SIGTERM, []string{"hook received signal terminated"}},
	}, status: 0},
	{name: "SIGHUP without Hangup shuts down", steps: []signalStep{{syscall.SIGHUP, []string{"hook received signal hangup"}}}, status: 0},
	{name: "SIGHUP in Signals shuts down despite Hangup", hangup: true, signals: []os.Signal{syscall.SIGHUP, syscall.SIGTERM},
		steps: []signalStep{{syscall.SIGHUP, []string{"hook received signal hangup"}}}, status: 0},
	{name: "a signal not in Signals kills", signals: []os.Signal{syscall.SIGTERM}, steps: []signalStep{{syscall.SIGINT, nil}}, status: 130},
	{name: "before Start SIGTERM kills", noStart: true, steps: []signalStep{{syscall.SIGTERM, nil}}, status: 143},
	{name: "before Start SIGQUIT dumps", noStart: true, steps: []signalStep{{syscall.SIGQUIT, nil}}, status: 2},
	{name: "SIGUSR1 does nothing", steps: []signalStep{
		{syscall.SIGUSR1, nil},
		{syscall.SIGTERM, []string{"hook received signal terminated"}},
	}, status: 0},
	{name: "a second signal forces the exit", block: true, steps: []signalStep{
		{syscall.SIGTERM, []string{"hook received signal terminated"}},
		{syscall.SIGINT, nil},
	}, status: 130},
	{name: "SIGHUP during the shutdown is ignored", hangup: true, block: true, steps: []signalStep{
		{syscall.SIGTERM, []string{"hook received signal terminated"}},
		{syscall.SIGHUP, nil},
	}, status: -1},
}

// program sets up the GracefulShutdown of c, saying its lines with say; the
// hook blocks until release is closed when c.block.
func (c signalCase) program(say func(string), release <-chan struct{}) (*instancelock.GracefulShutdown, error) {
	g := instancelock.NewGracefulShutdown(nil)
	g.Signals = c.signals
	g.Timeout = -1
	if c.hangup {
		g.Hangup = func() { say("hangup") }
	}
	g.Add("hook", func(context.Context) error {
		say("hook " + context.Cause(g.Context()).Error())
		if c.block {
			<-release
		}
		return nil
	})
	if c.noStart {
		return g, nil
	}
	return g, g.Start(context.Background())
}

func init() {
	helpers["signals"] = func() {
		i := slices.IndexFunc(signalCases, func(c signalCase) bool { return c.name == os.Getenv("CASE") })
		say := func(s string) { fmt.Println(s) }
		g, err := signalCases[i].program(say, make(chan struct{}))
		if err != nil {
			say("error " + err.Error())
			os.Exit(3)
		}
		say("ready")
		go func() { // the test ends the helper by closing stdin
			bufio.NewReader(os.Stdin).ReadString('\n')
			os.Exit(4)
		}()
		<-g.Done()
		os.Exit(g.ExitCode())
	}
}

// TestSignalLikeReal: Signal does to a GracefulShutdown what the real
// signal does to a process (a child running the same program): the same
// lines in the same order, and the same exit status.
func TestSignalLikeReal(t *testing.T) {
	for _, c := range signalCases {
		t.Run(c.name, func(t *testing.T) {
			t.Run("real", func(t *testing.T) { c.real(t) })
			t.Run("fake", func(t *testing.T) { c.fake(t) })
		})
	}
}

func (c signalCase) real(t *testing.T) {
	cmd := proctest.Command("INSTANCELOCKTEST_HELPER", "signals", "CASE="+c.name)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	if c.status == 2 {
		cmd.Stderr = &stderr // the stack dump
	}
	out := proctest.NewLines(t, cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	out.Expect("ready", 20*time.Second)
	for _, s := range c.steps {
		if err := cmd.Process.Signal(s.sig); err != nil {
			t.Fatal(err)
		}
		for _, want := range s.says {
			if got, err := out.Line(10 * time.Second); err != nil || got != want {
				t.Fatalf("after %v: said %q (%v), want %q", s.sig, got, err, want)
			}
		}
	}
	if c.status < 0 {
		select {
		case err := <-exited:
			t.Fatalf("the process ended (%v), want it running", err)
		case <-time.After(100 * time.Millisecond):
		}
		return
	}
	var err2 error
	select {
	case err2 = <-exited:
		exited <- err2 // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("the process did not end")
	}
	status := 0
	var ee *exec.ExitError
	if errors.As(err2, &ee) {
		status = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			status = 128 + int(ws.Signal())
		}
	} else if err2 != nil {
		t.Fatal(err2)
	}
	if status != c.status {
		t.Fatalf("ended with status %d, want %d", status, c.status)
	}
	if line, err := out.Line(5 * time.Second); !errors.Is(err, proctest.ErrClosed) {
		t.Fatalf("said %q (%v) more", line, err)
	}
	if c.status == 2 && !strings.HasPrefix(stderr.String(), "SIGQUIT: quit") {
		t.Fatalf("no stack dump on stderr: %.200q", stderr.String())
	}
}

func (c signalCase) fake(t *testing.T) {
	lines := make(chan string, 10)
	release := make(chan struct{})
	g, err := c.program(func(s string) { lines <- s }, release)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		close(release)
		if !c.noStart {
			g.Shutdown(nil) // no goroutine left behind
		}
	}()
	for i, s := range c.steps {
		err := Signal(g, s.sig)
		for _, want := range s.says {
			select {
			case got := <-lines:
				if got != want {
					t.Fatalf("after %v: said %q, want %q", s.sig, got, want)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("after %v: said nothing, want %q", s.sig, want)
			}
		}
		var ee *ExitError
		switch {
		case errors.As(err, &ee) && i == len(c.steps)-1:
			if ee.Status != c.status || ee.Signal != s.sig {
				t.Fatalf("Signal(%v) = %v, want the status %d", s.sig, err, c.status)
			}
			if c.noStart && g.Context().Err() != nil {
				t.Fatal("the shutdown began, but the process was killed")
			}
			return
		case err != nil:
			t.Fatalf("Signal(%v) = %v, want nil", s.sig, err)
		}
	}
	if c.status < 0 {
		select {
		case <-g.Done():
			t.Fatal("the shutdown finished, want it running")
		case <-time.After(100 * time.Millisecond):
		}
		return
	}
	if got := g.ExitCode(); got != c.status {
		t.Fatalf("ExitCode = %d, want %d", got, c.status)
	}
	select {
	case l := <-lines:
		t.Fatalf("said %q more", l)
	default:
	}
}
