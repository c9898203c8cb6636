package instancelock

import (
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestIsGoRunBinary(t *testing.T) {
	for path, want := range map[string]bool{
		"/tmp/go-build710017036/b001/exe/backend":                                                        true,
		"/home/me/tmp/go-build1/b123/exe/backend":                                                        true,
		`C:\Users\me\AppData\Local\Temp\go-build42\b001\exe\backend.exe`:                                 true,
		"/root/.cache/go-build/1f/1fa1f85f552e8411ae645a792fb522d14b9cc041ff231dff269f5025ad62fd53-d/gr": true,
		"/custom/gocache/1f/1fa1f85f552e8411ae645a792fb522d14b9cc041ff231dff269f5025ad62fd53-d/backend":  true,
		"/custom/gocache/2f/1fa1f85f552e8411ae645a792fb522d14b9cc041ff231dff269f5025ad62fd53-d/backend":  false, // not the hash's directory
		"/usr/local/bin/backend":         false,
		"./backend":                      false,
		"backend":                        false,
		"/srv/go-build/backend":          false,
		"/tmp/go-build123/b001/backend":  false,
		"/opt/1f/1fa1f85f-d/backend":     false,
		"/home/go-build5/b001/exe/x/y/z": false,
	} {
		if got := isGoRunBinary(path); got != want {
			t.Errorf("isGoRunBinary(%q) = %v, want %v", path, got, want)
		}
	}
}

func TestRestartCommand(t *testing.T) {
	cached := "/home/me/.gocache/3a/" + strings.Repeat("3a6b1b4e", 8) + "-d/backend"
	for _, tc := range []struct {
		argv []string
		want string
	}{
		{nil, "the program"},
		{[]string{"/usr/local/bin/backend"}, "/usr/local/bin/backend"},
		{[]string{"/tmp/go-build1/b001/exe/backend", "-addr", ":3000"}, "go run . -addr :3000"},
		{[]string{cached, "-pidfile", "my data/x.pid"}, "go run . -pidfile 'my data/x.pid'"},
		{[]string{"./backend", "", "it's", "$HOME"}, `./backend '' 'it'\''s' '$HOME'`},
	} {
		if got := restartCommand(tc.argv); got != tc.want {
			t.Errorf("restartCommand(%q) = %q, want %q", tc.argv, got, tc.want)
		}
	}
}

// The box fits 100 columns whatever the lengths of the path and of the
// restart command, and wraps rather than cuts: every word is still there.
func TestHelpBoxWidth(t *testing.T) {
	long := "/var/lib/" + strings.Repeat("very-long-directory-name/", 6) + "backend.pid"
	e := &AlreadyRunningError{Path: long, Holder: ProcessLock{PID: 4242, Port: 3000, StartedAt: time.Now()}, Proven: true}
	restart := "/home/me/.gocache/3a/" + strings.Repeat("3a6b1b4e0b", 7) + "-d/backend -pidfile " + long + " -addr 127.0.0.1:3000"
	box := e.Help(restart)
	for _, l := range strings.Split(strings.TrimSuffix(box, "\n"), "\n") {
		if n := utf8.RuneCountInString(l); n > helpMaxWidth {
			t.Errorf("line of %d columns:\n%s", n, l)
		}
		if !strings.HasPrefix(l, "║") && !strings.HasPrefix(l, "╔") && !strings.HasPrefix(l, "╚") {
			t.Errorf("line outside the frame: %q", l)
		}
	}
	flat := strings.Join(strings.Fields(strings.NewReplacer("║", " ").Replace(box)), "")
	for _, want := range []string{"kill4242", "kill-94242&&", strings.ReplaceAll(restart, " ", ""), strings.ReplaceAll(long, " ", ""), "curlhttp://localhost:3000/api/health"} {
		if !strings.Contains(flat, want) {
			t.Errorf("the box lost %q:\n%s", want, box)
		}
	}
	// A continuation is indented under the value, not under the label.
	if !strings.Contains(box, "║                    ") {
		t.Errorf("no continuation line indented to the value column:\n%s", box)
	}
	// A line whose label is too wide continues under a small indent.
	rows := wrapHelpLine("It runs on another host: stop it there, then run:     "+strings.Repeat("x ", 60), 96)
	if len(rows) < 2 || !strings.HasPrefix(rows[1], "  x") {
		t.Errorf("wrapped %q", rows)
	}
	// Short content keeps a box just as wide as it needs.
	short := (&AlreadyRunningError{Path: "data/backend.pid", Holder: ProcessLock{PID: 7}, Proven: true}).Help("./backend")
	if first := strings.SplitN(short, "\n", 2)[0]; utf8.RuneCountInString(first) >= 60 {
		t.Errorf("a short box is %d wide:\n%s", utf8.RuneCountInString(first), short)
	}
	// Help("") names the running program.
	if got := (&AlreadyRunningError{Path: "x.pid", Holder: ProcessLock{PID: 7}, Proven: true}).Help(""); !strings.Contains(got, restartCommand(os.Args)[:20]) {
		t.Errorf("Help(\"\") does not name the current command:\n%s", got)
	}
}

// Help suggests kill commands only for a holder the kernel named.
func TestHelpKillsOnlyAProvenHolder(t *testing.T) {
	e := &AlreadyRunningError{Path: "x.pid", Holder: ProcessLock{PID: 2}}
	got := e.Help("./backend")
	if strings.Contains(got, "kill ") || !strings.Contains(got, "not proven") || !strings.Contains(got, "./backend") {
		t.Errorf("unproven holder:\n%s", got)
	}
	e.Proven = true
	if got := e.Help("./backend"); !strings.Contains(got, "kill 2") {
		t.Errorf("proven holder:\n%s", got)
	}
}
