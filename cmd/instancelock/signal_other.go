//go:build !unix

package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
)

// defaultStopSignal is the default of stop -signal: the only signal these
// systems can send.
const defaultStopSignal = "KILL"

// stopUsageHere is what stop -h adds for these systems.
const stopUsageHere = `
On this system only KILL can be sent (on Windows, TerminateProcess): it is
the default of -signal, and the holder's shutdown hooks do not run. Stop an
instance gracefully its own way first (Ctrl-C in its console, or "sc stop"
for a service), and use stop for what remains.
`

// parseSignal accepts only KILL (or 9): these systems have no other
// signals to send.
func parseSignal(s string) (os.Signal, error) {
	switch strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(s)), "SIG") {
	case "KILL", "9":
		return os.Kill, nil
	}
	return nil, fmt.Errorf("%q: only KILL can be sent on %s", s, runtime.GOOS)
}

func signalName(sig os.Signal) string {
	if sig == os.Kill {
		return "SIGKILL"
	}
	return sig.String()
}

// forwardedSignals: run catches Ctrl-C so that it waits for its child; the
// console delivers Ctrl-C to the child as well.
var forwardedSignals = []os.Signal{os.Interrupt}

// lostSignal is sent to the child when the lock is lost.
var lostSignal = os.Kill

// forward passes nothing on: the console already delivered Ctrl-C to the
// child.
func forward(*os.Process, os.Signal) (bool, error) { return false, nil }

// exitCode is the child's exit status.
func exitCode(ps *os.ProcessState) int { return ps.ExitCode() }

// signalNumber is the Unix number of sig, for the 128+N exit codes.
func signalNumber(sig os.Signal) int {
	if sig == os.Kill {
		return 9
	}
	return 2 // os.Interrupt
}
