// Command instancelock is the operator's tool for instancelock PID files:
// it tells whether an instance runs, stops it, and runs any program (a cron
// job, a script) as a single instance, as util-linux flock(1) and run-one do.
//
//	instancelock status [-json] PIDFILE
//	instancelock stop [-timeout 10s] [-signal TERM] PIDFILE
//	instancelock run [-pidfile PATH] [-wait DURATION] [-conflict-exit-code N] -- COMMAND [ARGS...]
//	instancelock version
//
// Install it with
//
//	go install github.com/ad5dec64/instancelock/cmd/instancelock@latest
//
// status exits with the LSB init-script codes: 0 running, 1 stale PID file
// (the holder died), 3 not running (no PID file), 4 unknown (the file cannot
// be read, is not a PID file, or was written on another machine or boot and
// is not seen held).
//
// stop signals the holder of the lock (SIGTERM by default), waits for the
// lock to be released, sends SIGKILL after -timeout and removes a stale PID
// file. It exits 0 when nothing holds the lock any more, 1 otherwise. It
// never signals a process that does not hold the lock (a PID reused by
// another program).
//
// run takes the lock, runs COMMAND as its child and releases the lock when
// the child exits; it exits with the child's status (128+N when the child
// is killed by signal N). The PID file names the wrapper, the instancelock
// process that holds the lock, not the child: stopping the wrapper forwards
// the signal to the child. On Linux and FreeBSD the child is killed if the
// wrapper dies. When the lock is held, run prints the holder on standard
// error and exits with -conflict-exit-code (1 by default, like flock -n).
// Its own failures exit 125 (the lock could not be taken), 126 (COMMAND
// cannot be started) and 127 (COMMAND not found), like env(1) and timeout(1).
//
// Usage errors exit 2 (4 for status, whose 2 means something else to LSB).
// Every error is one line on standard error. docs/cli.md has the details and
// examples.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
)

func main() {
	os.Exit(cli(os.Args[1:], os.Stdout, os.Stderr))
}

// Exit codes shared by the commands.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

const mainUsage = `instancelock inspects, stops and runs single instances guarded by an
instancelock PID file.

Usage:
  instancelock status [-json] PIDFILE
  instancelock stop [-timeout 10s] [-signal TERM] PIDFILE
  instancelock run [-pidfile PATH] [-wait DURATION] [-conflict-exit-code N] -- COMMAND [ARGS...]
  instancelock version

Commands:
  status    print who holds the lock; exit 0 running, 1 stale, 3 not running, 4 unknown
  stop      signal the holder, wait for the lock, SIGKILL after a timeout
  run       run COMMAND as the single instance (like flock -n or run-one)
  version   print the version

Run "instancelock COMMAND -h" for the flags, exit codes and examples of a command.

Examples:
  instancelock status data/backend.pid
  instancelock stop -timeout 30s /run/backend/backend.pid
  */5 * * * * instancelock run -pidfile /run/job.pid -- /usr/local/bin/job
`

// cli runs the command line args (without the program name) and returns the
// exit code.
func cli(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "instancelock: missing command (status, stop, run, version); see instancelock -h")
		return exitUsage
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "status":
		return cmdStatus(rest, stdout, stderr)
	case "stop":
		return cmdStop(rest, stdout, stderr)
	case "run":
		return cmdRun(rest, stdout, stderr)
	case "version", "-version", "--version":
		if len(rest) > 0 && isHelp(rest[0]) {
			fmt.Fprint(stdout, commandUsage["version"])
			return exitOK
		}
		if len(rest) > 0 {
			fmt.Fprintf(stderr, "instancelock version: unexpected argument %q\n", rest[0])
			return exitUsage
		}
		fmt.Fprintln(stdout, versionString())
		return exitOK
	case "help", "-h", "-help", "--help":
		if len(rest) > 0 {
			if u, ok := commandUsage[rest[0]]; ok {
				fmt.Fprint(stdout, u)
				return exitOK
			}
			fmt.Fprintf(stderr, "instancelock help: unknown command %q (status, stop, run, version)\n", rest[0])
			return exitUsage
		}
		fmt.Fprint(stdout, mainUsage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "instancelock: unknown command %q (status, stop, run, version); see instancelock -h\n", cmd)
		return exitUsage
	}
}

// blankPath returns the one-line complaint about a PID file path given
// empty or only blank (an unset shell variable: instancelock stop
// "$PIDFILE"), or "" when path may be used. The library reads "" as its
// DefaultPath, relative to the working directory, so passing such a path
// on would inspect, stop or lock whatever runs there: bad usage instead.
// what names the argument ("PIDFILE", "-pidfile"), instead what to give.
func blankPath(cmd, what, path, instead string) string {
	if strings.TrimSpace(path) != "" {
		return ""
	}
	return fmt.Sprintf("instancelock %s: %s is %s (an unset shell variable?): %s", cmd, what, blankWord(path), instead)
}

func blankWord(path string) string {
	if path == "" {
		return "empty"
	}
	return fmt.Sprintf("only blanks, %q", path)
}

func isHelp(arg string) bool {
	switch arg {
	case "-h", "-help", "--help":
		return true
	}
	return false
}

// commandUsage is the -h text of each command.
var commandUsage = map[string]string{
	"status":  statusUsage,
	"stop":    stopUsage + stopUsageHere,
	"run":     runUsage,
	"version": "Usage: instancelock version\n\nPrints the module version, the Go version and the platform.\n\nExample:\n  instancelock version\n",
}

// newFlagSet returns a flag set that reports nothing by itself: parse
// prints the one-line error or the help text.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("instancelock "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parse parses args into fs, allowing flags after the positional arguments
// when interleave is set (instancelock status data/app.pid -json). It
// returns the positional arguments, and ok=false with the exit code to
// return when the command must stop: -h (code 0, help on stdout) or a bad
// flag (one line on stderr, usageCode).
func parse(fs *flag.FlagSet, args []string, interleave bool, stdout, stderr io.Writer, usageCode int) ([]string, int, bool) {
	var pos []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, commandUsage[strings.TrimPrefix(fs.Name(), "instancelock ")])
			return nil, exitOK, false
		}
		if err != nil {
			fmt.Fprintf(stderr, "%s: %s (see %s -h)\n", fs.Name(), oneLine(err), fs.Name())
			return nil, usageCode, false
		}
		rest := fs.Args()
		consumed := len(args) - len(rest)
		if !interleave || len(rest) == 0 || (consumed > 0 && args[consumed-1] == "--") {
			return append(pos, rest...), 0, true
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// oneLine flattens a multi-line error (errors.Join) onto one line, without
// the library's "instancelock: " prefix, which the command's own prefix
// ("instancelock stop: ") says already.
func oneLine(err error) string {
	msg := strings.ReplaceAll(err.Error(), "\n", "; ")
	return strings.Join(strings.Fields(strings.ReplaceAll(msg, "instancelock: ", "")), " ")
}

// versionString is "instancelock v1.2.3 go1.26.8 linux/amd64", with the VCS
// revision of a build from a checkout.
func versionString() string {
	v := "(devel)"
	var rev string
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
				if len(rev) > 12 {
					rev = rev[:12]
				}
			case "vcs.modified":
				if s.Value == "true" && rev != "" {
					rev += "+dirty"
				}
			}
		}
	}
	if rev != "" && v == "(devel)" {
		v += " " + rev
	}
	return fmt.Sprintf("instancelock %s %s %s/%s", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
