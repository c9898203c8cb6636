package instancelock

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// helpMaxWidth is the widest line of the already-running box, frame
// included: it must fit a 100-column terminal.
const helpMaxWidth = 100

// goRunBinary matches the path of a program that `go run` built: a
// temporary build directory (go-build123/b001/exe/NAME, under TMPDIR or
// GOTMPDIR), or, since Go 1.24, the build cache, whatever GOCACHE is
// (…/ab/ab<62 hex digits>-d/NAME).
var goRunBinary = regexp.MustCompile(`(^|/)(go-build[0-9]+/b[0-9]+/exe|([0-9a-f]{2})/([0-9a-f]{64})-d)/[^/]+$`)

// isGoRunBinary reports whether path is a program built by `go run`.
func isGoRunBinary(path string) bool {
	m := goRunBinary.FindStringSubmatch(strings.ReplaceAll(path, `\`, "/")) // Windows paths on any system
	if m == nil {
		return false
	}
	return m[3] == "" || strings.HasPrefix(m[4], m[3]) // the cache's directory is the hash's first byte
}

// restartCommand is the command line that starts the program of argv
// again, for Help: "go run ." and the arguments when it was started by
// `go run` (the binary's path is a throw-away build), otherwise argv; the
// arguments are quoted for a POSIX shell where needed.
func restartCommand(argv []string) string {
	if len(argv) == 0 {
		return "the program"
	}
	cmd := argv[0]
	if isGoRunBinary(cmd) {
		cmd = "go run ."
	}
	parts := []string{cmd}
	for _, a := range argv[1:] {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`*?;&|<>()[]{}~#!") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

// helpBox draws lines in a box no wider than helpMaxWidth columns. A line
// too long is wrapped at spaces, else after a slash (a word longer than
// the box with neither is cut), and
// its continuation lines are indented to the column where its value begins
// ("To force it:       kill -9 …" continues under "kill").
func helpBox(lines []string) string {
	const inner = helpMaxWidth - 4 // "║ " and " ║"
	var rows []string
	for _, l := range lines {
		rows = append(rows, wrapHelpLine(l, inner)...)
	}
	width := 0
	for _, r := range rows {
		width = max(width, len([]rune(r)))
	}
	var b strings.Builder
	b.WriteString("╔" + strings.Repeat("═", width+2) + "╗\n")
	for _, r := range rows {
		b.WriteString("║ " + r + strings.Repeat(" ", width-len([]rune(r))) + " ║\n")
	}
	b.WriteString("╚" + strings.Repeat("═", width+2) + "╝\n")
	return b.String()
}

// wrapHelpLine splits l into rows of at most width runes.
func wrapHelpLine(l string, width int) []string {
	r := []rune(l)
	if len(r) <= width {
		return []string{l}
	}
	// The value column: after the label's run of two or more spaces, or
	// after the leading spaces.
	indent := len(r) - len([]rune(strings.TrimLeft(l, " ")))
	if i := strings.Index(strings.TrimLeft(l, " "), "  "); i >= 0 {
		rest := strings.TrimLeft(l, " ")[i:]
		indent += len([]rune(strings.TrimLeft(l, " ")[:i])) + len(rest) - len(strings.TrimLeft(rest, " "))
	}
	if indent > width/2 {
		indent = 2
	}
	pad := strings.Repeat(" ", indent)
	var rows []string
	for len(r) > width {
		cut := width
		for i := width; i > indent; i-- {
			if r[i] == ' ' {
				cut = i
				break
			}
		}
		if cut == width { // no space: break a long path after a slash
			for i := width - 1; i > indent; i-- {
				if r[i] == '/' {
					cut = i + 1
					break
				}
			}
		}
		rows = append(rows, strings.TrimRight(string(r[:cut]), " "))
		r = append([]rune(pad), []rune(strings.TrimLeft(string(r[cut:]), " "))...)
	}
	return append(rows, string(r))
}

// Help returns the multi-line text a program prints when it refuses to
// start: who holds the lock and how to stop it, force it, or check its
// health. restart is the command that starts the program again: "" uses
// the current command line, quoted for a shell, or "go run ." and the
// arguments when the program was started by `go run` (its binary is then a
// throw-away build, in a go-build temporary directory or in GOCACHE). The
// box is at most 100 columns wide: longer lines are wrapped.
func (e *AlreadyRunningError) Help(restart string) string {
	if restart == "" {
		restart = restartCommand(os.Args)
	}
	lines := append(e.facts(), "")
	lines = append(lines, e.advice(restart)...)
	if e.Holder.Port != 0 {
		lines = append(lines, fmt.Sprintf("To check health:   curl http://localhost:%d/api/health", e.Holder.Port))
	}
	return helpBox(lines)
}

// facts are the lines of Help that say what is known of the holder.
func (e *AlreadyRunningError) facts() []string {
	h := e.Holder
	lines := []string{
		"Another instance is already running.",
		"",
		"  PID:      " + e.pid(),
	}
	if !h.StartedAt.IsZero() {
		lines = append(lines, "  Started:  "+h.StartedAt.UTC().Format(timeLayout))
	}
	if h.Port != 0 {
		lines = append(lines, fmt.Sprintf("  Port:     %d", h.Port))
	}
	if h.Hostname != "" {
		lines = append(lines, "  Host:     "+h.Hostname)
	}
	return append(lines, "  Lock:     "+e.Path)
}

// pid is the holder's pid for Help, "unknown" when it is not known.
func (e *AlreadyRunningError) pid() string {
	if e.Holder.PID <= 0 {
		return "unknown"
	}
	return strconv.Itoa(e.Holder.PID)
}

// advice are the lines of Help that say what to do. They advise killing
// a pid only when the kernel named it as the holder (Proven): the file may
// be forged, or name a pid of another PID namespace.
func (e *AlreadyRunningError) advice(restart string) []string {
	pid := e.pid()
	switch {
	case e.Unlocked:
		// The kernel lock is free: never say it is held, never advise a
		// kill (the pid may belong to any program).
		return []string{
			"Pid " + pid + " named in the file is alive, but it does not hold the lock (the lock is free):",
			"the file is a bare PID, written by a tool that takes no lock. Starts refuse while it lives.",
			"If pid " + pid + " is that program: stop it by its own means, then run: " + restart,
			"If it is not (its pid was reused): rm " + e.Path + " && " + restart,
		}
	case !e.Holder.Local():
		return []string{"It runs on another host or in another container: stop it there, then run: " + restart}
	case e.Proven && e.Holder.PID > 0:
		return []string{
			"To stop it:        kill " + pid,
			"To force it:       kill -9 " + pid + " && " + restart,
		}
	}
	return []string{
		"The lock is held, but pid " + pid + " is not proven to hold it: signal nothing by hand.",
		"To see who holds it: instancelock status " + e.Path,
		"Once it is gone:   " + restart,
	}
}
