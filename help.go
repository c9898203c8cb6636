package instancelock

import (
	"regexp"
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
