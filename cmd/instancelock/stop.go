package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/ad5dec64/instancelock"
)

const stopUsage = `Usage: instancelock stop [-timeout 10s] [-signal TERM] PIDFILE

Sends a signal to the process that holds the lock of PIDFILE, waits until
the lock is released, and sends SIGKILL if it is still held after -timeout
(like start-stop-daemon --retry TERM/10/KILL). A stale PID file (nothing
holds the lock: its process died, its PID now belongs to another program,
or it is a copy) is removed, and the process it names is left alone: stop
never signals a process that does not hold the lock. A bare PID naming a
live process that takes no lock (another tool's file) makes starts refuse:
stop signals nothing, says so and exits 1.

For a program run by "instancelock run", PIDFILE names the wrapper, which
forwards the signal to the program and exits when it exits.

Exit codes:
  0  nothing holds the lock any more (stopped, or was not running)
  1  failure: still held, another machine's or boot's lock, a lock held
     from another PID namespace (stop it from there), unreadable or not a
     PID file,
     a bare PID of a live process that takes no lock (starts refuse it: stop
     that process by its own means, or remove the file if its PID was
     reused), or a new instance took the lock meanwhile
  2  bad usage, an empty PIDFILE (an unset shell variable) included

Flags:
  -signal NAME    first signal: TERM (default), INT, HUP, QUIT, USR1, USR2,
                  KILL or any other name the system knows, with or without
                  the SIG prefix, or a number (15)
  -timeout D      how long to wait before SIGKILL (default 10s; 0 sends
                  SIGKILL at once when the first signal was not enough)

Examples:
  instancelock stop data/backend.pid
  instancelock stop -timeout 30s -signal INT /run/backend/backend.pid
  instancelock stop /run/job.pid && systemctl start job
`

// pollInterval is how often stop checks whether the lock was released.
const pollInterval = 20 * time.Millisecond

// killWait bounds the wait for the lock after SIGKILL.
const killWait = 5 * time.Second

func cmdStop(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("stop")
	timeout := fs.Duration("timeout", 10*time.Second, "")
	sigName := fs.String("signal", defaultStopSignal, "")
	pos, code, ok := parse(fs, args, true, stdout, stderr, exitUsage)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "instancelock stop: want exactly one PIDFILE argument, got %d (see instancelock stop -h)\n", len(pos))
		return exitUsage
	}
	if msg := blankPath("stop", "the PIDFILE argument", pos[0], "give the PID file's path; nothing was signalled (see instancelock stop -h)"); msg != "" {
		fmt.Fprintln(stderr, msg)
		return exitUsage
	}
	if *timeout < 0 {
		fmt.Fprintf(stderr, "instancelock stop: -timeout %v is negative\n", *timeout)
		return exitUsage
	}
	sig, err := parseSignal(*sigName)
	if err != nil {
		fmt.Fprintf(stderr, "instancelock stop: -signal: %v\n", err)
		return exitUsage
	}
	s := &stopper{path: pos[0], sig: sig, timeout: *timeout, out: stdout, errw: stderr}
	return s.stop()
}

type stopper struct {
	path    string
	sig     os.Signal
	timeout time.Duration
	out     io.Writer
	errw    io.Writer
	l       *instancelock.Locker
}

func (s *stopper) fail(format string, args ...any) int {
	fmt.Fprintf(s.errw, "instancelock stop: "+format+"\n", args...)
	return exitFail
}

func (s *stopper) stop() int {
	var err error
	if s.l, err = instancelock.New(s.path); err != nil {
		return s.fail("%s", oneLine(err))
	}
	// Read the file first: stop removes stale PID files, so it must refuse
	// anything that is not one (a mistyped path to a config file).
	h, err := s.l.Holder()
	switch {
	case errors.Is(err, instancelock.ErrNotRunning):
		if perr := parentNotDir(s.path); perr != nil {
			return s.fail("%s; nothing done", perr)
		}
		// No file; on Linux the holder may still hold the lock (its
		// socket names it) while its file was removed.
		if cur, running, rerr := s.l.Running(); rerr == nil && running && cur.PID > 0 {
			h = cur
			break
		}
		fmt.Fprintf(s.out, "%s: not running (no PID file)\n", s.path)
		return exitOK
	case errors.Is(err, instancelock.ErrForeignFile):
		return s.fail("%s: %s; nothing done", s.path, pathErr(s.path, err)) // says "not a PID file"
	case errors.Is(err, instancelock.ErrInvalidLock):
		// What a crash left of a PID file: remove it unless it is held.
		return s.cleanRemnant()
	case err != nil:
		return s.fail("cannot read %s: %s", s.path, pathErr(s.path, err))
	}
	from := originOf(h)
	if from == originElsewhere {
		return s.fail("%s was written %s: stop pid %d there", s.path, whereWritten(h), h.PID)
	}
	target, running, err := s.l.Running()
	var are *instancelock.AlreadyRunningError
	switch {
	case errors.As(err, &are) && are.Unlocked:
		// Starts refuse this file, and its process holds no lock: nothing
		// to signal, and "stopped" would be a lie.
		return s.fail("%s; not signalling it", blockedAdvice(s.path, are))
	case err != nil:
		return s.fail("cannot tell whether %s is held: %s", s.path, pathErr(s.path, err))
	}
	if !running {
		return s.clean(h)
	}
	if from == originBoot && otherNamespace(h) {
		// Its pid is not a pid here; the kernel may show another, but
		// that process is not proven against the file: never signalled.
		return s.fail("%s is held by the process that wrote it in another PID namespace of this boot (pid %d there, as the file says): stop it from there; not signalling anything", s.path, h.PID)
	}
	if target.PID <= 0 {
		return s.fail("%s is locked, but its content does not say by which process", s.path)
	}
	start := time.Now()
	if !s.signal(target, s.sig) {
		return exitFail
	}
	deadline := start.Add(s.timeout)
	killed := s.sig == os.Kill
	for {
		cur, running, err := s.l.Running()
		if err != nil {
			return s.fail("cannot tell whether %s is held: %s", s.path, pathErr(s.path, err))
		}
		if !running {
			break
		}
		if cur.PID > 0 && !sameInstance(cur, target) {
			return s.fail("pid %d released %s, but pid %d holds it now", target.PID, s.path, cur.PID)
		}
		if time.Now().After(deadline) {
			if killed {
				return s.fail("pid %d still holds %s %v after SIGKILL", target.PID, s.path, killWait)
			}
			fmt.Fprintf(s.out, "pid %d still holds %s after %v: sending SIGKILL\n", target.PID, s.path, s.timeout)
			if !s.signal(target, os.Kill) {
				return exitFail
			}
			killed = true
			deadline = time.Now().Add(killWait)
		}
		time.Sleep(pollInterval)
	}
	fmt.Fprintf(s.out, "pid %d stopped after %v\n", target.PID, time.Since(start).Round(time.Millisecond))
	// A killed holder leaves its PID file behind.
	if _, err := s.l.CleanStale(); err != nil {
		return s.fail("%s", oneLine(err))
	}
	return s.notHeldNow()
}

// signal sends sig to the holder through Terminate, which checks again that
// target still holds the lock. It reports whether stop may go on: a holder
// that exited meanwhile is fine (the wait loop sees the lock free).
func (s *stopper) signal(target instancelock.ProcessLock, sig os.Signal) bool {
	err := s.l.Terminate(sig)
	switch {
	case err == nil:
		fmt.Fprintf(s.out, "sent %s to pid %d\n", signalName(sig), target.PID)
		return true
	case errors.Is(err, instancelock.ErrNotRunning):
		return true
	}
	s.fail("%s", oneLine(err))
	return false
}

// clean handles a PID file that nothing holds and that the library judges
// stale (instancelock.Locker.Running): it is removed, and nothing is
// signalled, whatever process its pid now names.
func (s *stopper) clean(h instancelock.ProcessLock) int {
	removed, err := s.l.CleanStale()
	if err != nil {
		return s.fail("%s", oneLine(err))
	}
	if removed {
		fmt.Fprintf(s.out, "%s: not running; removed the stale PID file (pid %d named in it does not hold the lock; it was not signalled)\n", s.path, h.PID)
	}
	return s.notHeldNow()
}

// cleanRemnant handles a file that holds what a crash left of a PID file.
func (s *stopper) cleanRemnant() int {
	removed, err := s.l.CleanStale()
	if err != nil {
		return s.fail("%s", oneLine(err))
	}
	if removed {
		fmt.Fprintf(s.out, "%s: not running; removed what a crash left of a PID file\n", s.path)
		return s.notHeldNow()
	}
	if _, running, err := s.l.Running(); err == nil && !running {
		fmt.Fprintf(s.out, "%s: not running (the file is empty; it is left in place)\n", s.path)
		return exitOK
	}
	return s.fail("%s is locked, but its content does not say by which process; nothing done", s.path)
}

// notHeldNow is the final check: 0 if no live process holds the lock.
func (s *stopper) notHeldNow() int {
	cur, running, err := s.l.Running()
	switch {
	case err != nil:
		return s.fail("cannot tell whether %s is held: %s", s.path, pathErr(s.path, err))
	case running:
		return s.fail("pid %d took %s meanwhile", cur.PID, s.path)
	}
	return exitOK
}

// sameInstance reports whether a and b describe the same holding.
func sameInstance(a, b instancelock.ProcessLock) bool {
	return a.PID == b.PID && a.InstanceID == b.InstanceID && a.StartedAt.Equal(b.StartedAt)
}
