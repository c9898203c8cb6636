package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/ad5dec64/instancelock"
	"github.com/ad5dec64/instancelock/internal/sdnotify"
)

const runUsage = `Usage: instancelock run [-pidfile PATH] [-wait DURATION] [-conflict-exit-code N] -- COMMAND [ARGS...]

Runs COMMAND as the single instance: takes the lock of the PID file, runs
COMMAND as a child, and releases the lock (removing the PID file) when the
child exits. If another process holds the lock, COMMAND is not run: the
holder is printed on standard error and run exits with -conflict-exit-code.

The PID file names the wrapper: the instancelock process that holds the
lock, not COMMAND. "instancelock stop" and "kill PID" therefore signal the
wrapper, which passes SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2
on to COMMAND and then exits with COMMAND's status. (SIGINT, SIGQUIT and
SIGHUP are not passed on when COMMAND is in the foreground of the terminal,
which sent them to COMMAND already.) On Linux and FreeBSD, COMMAND is killed
if the wrapper dies, even by SIGKILL, so it never runs without the lock; the
lock is never passed on to COMMAND. If the PID file is removed, moved or
replaced while COMMAND runs, the wrapper keeps the lock and writes the file
again (on Linux at once, and no other instance of the host can start
meanwhile; elsewhere within a second). Only when it cannot (another process
holds the file now at the path, or it is someone's file) does it print
"lock lost" and send COMMAND SIGTERM.

Under systemd (NOTIFY_SOCKET set), run tells systemd that COMMAND is the
unit's main process (MAINPID=) and passes NOTIFY_SOCKET and WATCHDOG_USEC
on to it (not WATCHDOG_PID), so a Type=notify COMMAND notifies systemd
itself; use NotifyAccess=all in the unit.

Exit codes:
  N         COMMAND's exit status; 128+N if signal N killed it
  1         the lock is held by another process (see -conflict-exit-code)
  2         bad usage, an empty -pidfile (an unset shell variable) included
  125       the lock could not be taken (unreadable path, not a PID file)
  126       COMMAND could not be started
  127       COMMAND was not found
  128+N     signal N arrived while waiting for the lock

Flags:
  -pidfile PATH             the PID file; default: one per command line under
                            the user's cache directory (~/.cache/instancelock/
                            NAME-HASH.pid, like run-one); give it to use status
                            and stop
  -wait D                   wait up to D for the lock (default 0: do not wait)
  -conflict-exit-code N     exit status when the lock is held (default 1)

Examples:
  instancelock run -pidfile /run/job.pid -- /usr/local/bin/job --full
  */5 * * * * instancelock run -pidfile /run/job.pid -- /usr/local/bin/job
  instancelock run -pidfile data/backup.pid -wait 10m -- ./backup.sh
  instancelock run -pidfile /run/job.pid -conflict-exit-code 0 -- job   # quiet skip in cron
`

// Exit codes of run's own failures, as env(1) and timeout(1) use them.
const (
	exitRunFailed = 125
	exitCannotRun = 126
	exitNotFound  = 127
)

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("run")
	pidfile := fs.String("pidfile", "", "")
	wait := fs.Duration("wait", 0, "")
	conflict := fs.Int("conflict-exit-code", 1, "")
	argv, code, ok := parse(fs, args, false, stdout, stderr, exitUsage)
	if !ok {
		return code
	}
	switch {
	case len(argv) == 0:
		fmt.Fprintln(stderr, "instancelock run: missing COMMAND (see instancelock run -h)")
		return exitUsage
	case *wait < 0:
		fmt.Fprintf(stderr, "instancelock run: -wait %v is negative\n", *wait)
		return exitUsage
	case *conflict < 0 || *conflict > 255:
		fmt.Fprintf(stderr, "instancelock run: -conflict-exit-code %d is outside 0..255\n", *conflict)
		return exitUsage
	}
	if isSet(fs, "pidfile") {
		if msg := blankPath("run", "-pidfile", *pidfile, "give the PID file's path, or leave -pidfile out for one PID file per command line; COMMAND was not run"); msg != "" {
			fmt.Fprintln(stderr, msg)
			return exitUsage
		}
	}
	r := &runner{path: *pidfile, argv: argv, wait: *wait, conflict: *conflict, stdout: stdout, stderr: stderr}
	if r.path == "" {
		p, err := defaultPIDFile(argv)
		if err != nil {
			return r.fail(exitRunFailed, "%v", err)
		}
		r.path = p
	}
	return r.run()
}

// isSet reports whether the flag name was given on the command line.
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

type runner struct {
	path     string
	argv     []string
	wait     time.Duration
	conflict int
	stdout   io.Writer
	stderr   io.Writer
}

func (r *runner) fail(code int, format string, args ...any) int {
	fmt.Fprintf(r.stderr, "instancelock run: "+format+"\n", args...)
	return code
}

func (r *runner) run() int {
	cmd := exec.Command(r.argv[0], r.argv[1:]...)
	if cmd.Err != nil {
		return r.startFailed(cmd.Err)
	}
	// Catch the signals first: from now on they are passed on (or end the
	// wait), never fatal to the wrapper.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, forwardedSignals...)
	defer signal.Stop(sigs)

	l, err := instancelock.New(r.path)
	if err != nil {
		return r.fail(exitRunFailed, "%s", oneLine(err))
	}
	if code, ok := r.acquire(l, sigs); !ok {
		return code
	}
	defer func() {
		if err := l.Unlock(); err != nil {
			r.fail(0, "releasing the lock: %s", oneLine(err))
		}
	}()
	select {
	case s := <-sigs:
		return r.fail(128+signalNumber(s), "%s arrived before %s started; not running it", signalName(s), r.argv[0])
	default:
	}

	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, r.stdout, r.stderr
	sd := sdnotify.FromEnv()
	if sd != nil {
		cmd.Env = childEnv(os.Environ())
	}
	setParentDeathSignal(cmd)
	// The parent-death signal fires when the thread that started the child
	// exits: keep this goroutine, and so its thread, until the child exits.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		return r.startFailed(err)
	}
	if err := bindChild(cmd.Process); err != nil {
		r.fail(0, "%s may outlive this wrapper: %s", r.argv[0], oneLine(err))
	}
	// Under systemd, COMMAND becomes the unit's main process: it sends its
	// own READY=1 and watchdog pings, and systemd watches its exit.
	if err := sd.Notify(fmt.Sprintf("MAINPID=%d", cmd.Process.Pid)); err != nil {
		r.fail(0, "telling systemd the main PID: %v", err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	lost := l.Lost()
	for {
		select {
		case s := <-sigs:
			if _, err := forward(cmd.Process, s); err != nil && !errors.Is(err, os.ErrProcessDone) {
				r.fail(0, "passing %s on to %s: %v", signalName(s), r.argv[0], err)
			}
		case <-lost:
			lost = nil
			r.fail(0, "%s; sending %s to %s", oneLine(l.Err()), signalName(lostSignal), r.argv[0])
			cmd.Process.Signal(lostSignal)
		case <-done:
			if cmd.ProcessState == nil { // wait(2) itself failed
				return r.fail(exitRunFailed, "lost track of %s", r.argv[0])
			}
			return exitCode(cmd.ProcessState)
		}
	}
}

// childEnv is the wrapper's environment for COMMAND under systemd:
// NOTIFY_SOCKET and WATCHDOG_USEC pass through, so COMMAND notifies systemd
// itself; WATCHDOG_PID, which names the wrapper, is dropped (run tells
// systemd that COMMAND is the main process, and a COMMAND that saw another
// PID there would not send watchdog pings).
func childEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "WATCHDOG_PID=") {
			out = append(out, kv)
		}
	}
	return out
}

// interrupted is the cause of a wait for the lock ended by a signal.
type interrupted struct{ sig os.Signal }

func (e *interrupted) Error() string { return signalName(e.sig) }

// acquire takes the lock, waiting up to r.wait. When it returns ok=false,
// code is the exit code and the reason has been printed.
func (r *runner) acquire(l *instancelock.Locker, sigs <-chan os.Signal) (code int, ok bool) {
	var err error
	if r.wait == 0 {
		err = l.TryLock()
	} else {
		parent, interrupt := context.WithCancelCause(context.Background())
		defer interrupt(nil)
		ctx, cancel := context.WithTimeout(parent, r.wait)
		defer cancel()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case s := <-sigs:
				interrupt(&interrupted{s})
			case <-stop:
			}
		}()
		err = l.Lock(ctx)
		close(stop)
		wg.Wait()
		if in := (*interrupted)(nil); errors.As(context.Cause(parent), &in) {
			if err == nil {
				l.Unlock()
			}
			return r.fail(128+signalNumber(in.sig), "%s arrived while waiting for %s; not running %s", signalName(in.sig), r.path, r.argv[0]), false
		}
	}
	var are *instancelock.AlreadyRunningError
	switch {
	case errors.As(err, &are) && are.Unlocked:
		return r.fail(r.conflict, "%s; not running %s", blockedAdvice(r.path, are), r.argv[0]), false
	case errors.As(err, &are):
		held := "is held by"
		if r.wait > 0 {
			held = fmt.Sprintf("is still held after %v by", r.wait)
		}
		return r.fail(r.conflict, "%s %s %s; not running %s", r.path, held, describeHolder(are.Holder), r.argv[0]), false
	case err != nil:
		return r.fail(exitRunFailed, "cannot lock %s: %s", r.path, pathErr(r.path, err)), false
	}
	return 0, true
}

// startFailed reports why COMMAND could not be started: 127 when it does
// not exist, 126 otherwise.
func (r *runner) startFailed(err error) int {
	code := exitCannotRun
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
		code = exitNotFound
	}
	var ee *exec.Error
	if errors.As(err, &ee) {
		err = ee.Err
	}
	return r.fail(code, "%s: %s", r.argv[0], oneLine(err))
}

// describeHolder is "pid 123, started 2025-11-27T20:00:00.000Z (uptime 5m0s)".
func describeHolder(h instancelock.ProcessLock) string {
	if h.PID <= 0 {
		return "a process whose details could not be read"
	}
	s := fmt.Sprintf("pid %d", h.PID)
	switch originOf(h) {
	case originBoot:
		if otherNamespace(h) {
			s += " (in another PID namespace)"
		}
	case originElsewhere:
		s += " " + whereWritten(h)
	}
	if !h.StartedAt.IsZero() {
		s += fmt.Sprintf(", started %s (uptime %s)", h.StartedAt.UTC().Format(timeLayout), time.Since(h.StartedAt).Round(time.Second))
	}
	return s
}

// defaultPIDFile is the PID file of a run without -pidfile: one per command
// line, as run-one does, under the user's cache directory.
func defaultPIDFile(argv []string) (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no -pidfile given, and no cache directory to put one in: %v", err)
	}
	sum := sha256.Sum256([]byte(strings.Join(argv, "\x00")))
	name := strings.Map(func(r rune) rune {
		if r == '.' || r == '-' || r == '_' || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') || ('0' <= r && r <= '9') {
			return r
		}
		return '_'
	}, filepath.Base(argv[0]))
	return filepath.Join(dir, "instancelock", name+"-"+hex.EncodeToString(sum[:6])+".pid"), nil
}
