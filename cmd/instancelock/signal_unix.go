//go:build unix

package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// defaultStopSignal is the default of stop -signal.
const defaultStopSignal = "TERM"

// stopUsageHere is what stop -h adds for this system: nothing.
const stopUsageHere = ""

// parseSignal accepts a signal name with or without the SIG prefix, in any
// case (TERM, sigint, SIGUSR1), or a number in 1..64.
func parseSignal(s string) (os.Signal, error) {
	name := strings.ToUpper(strings.TrimSpace(s))
	if name == "" {
		return nil, fmt.Errorf("empty signal name")
	}
	if n, err := strconv.Atoi(name); err == nil {
		if n < 1 || n > 64 {
			return nil, fmt.Errorf("signal number %d is outside 1..64", n)
		}
		return syscall.Signal(n), nil
	}
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return nil, fmt.Errorf("unknown signal %q (want TERM, INT, HUP, QUIT, USR1, USR2, KILL, another name or a number)", s)
}

// signalName is "SIGTERM", or "signal 40" for a signal without a name.
func signalName(sig os.Signal) string {
	if s, ok := sig.(syscall.Signal); ok {
		if n := unix.SignalName(s); n != "" {
			return n
		}
		return fmt.Sprintf("signal %d", int(s))
	}
	return sig.String()
}

// forwardedSignals are the signals run catches and passes on to its child.
var forwardedSignals = []os.Signal{unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2}

// lostSignal is sent to the child when the lock is lost.
var lostSignal os.Signal = unix.SIGTERM

// forward passes sig on to the child p, and reports whether it did. The
// terminal signals (SIGINT from Ctrl-C, SIGQUIT from Ctrl-\, SIGHUP on
// hang-up) are not passed on when the child is in the terminal's foreground
// process group: the terminal sent them to the child already, and a second
// SIGINT makes many programs (GracefulShutdown among them) exit at once.
func forward(p *os.Process, sig os.Signal) (bool, error) {
	switch sig {
	case unix.SIGINT, unix.SIGQUIT, unix.SIGHUP:
		if inTerminalForeground(p.Pid) {
			return false, nil
		}
	}
	return true, p.Signal(sig)
}

// inTerminalForeground reports whether process pid is in the foreground
// process group of this process's controlling terminal.
func inTerminalForeground(pid int) bool {
	tty, err := os.Open("/dev/tty")
	if err != nil {
		return false // no controlling terminal
	}
	defer tty.Close()
	fg, err := unix.IoctlGetInt(int(tty.Fd()), unix.TIOCGPGRP)
	if err != nil {
		return false
	}
	pg, err := unix.Getpgid(pid)
	return err == nil && pg == fg
}

// exitCode is the child's exit status, 128+N if signal N killed it.
func exitCode(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// signalNumber is the number of sig, for the 128+N exit codes.
func signalNumber(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return int(s)
	}
	return 0
}
