//go:build unix

package docstest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The fence languages a block may have: sh is run, the others are not.
// console is a transcript (commands with their output), sql a query.
var languages = map[string]bool{"sh": true, "text": true, "console": true, "ini": true, "yaml": true, "json": true,
	"go": true, "sql": true}

// block is one fenced block of a Markdown file.
type block struct {
	file string // relative to the repository root
	line int    // of the opening fence
	lang string
	text string
	dirs map[string]string // the docs-test directives
}

func (b block) name() string { return fmt.Sprintf("%s:%d", b.file, b.line) }

var directiveRE = regexp.MustCompile(`^\s*<!--\s*docs-test:(.*?)-->\s*$`)

// parse returns the fenced blocks of a Markdown file, and an error for a
// fence without a language or one not allowed.
func parse(file, content string) ([]block, []error) {
	var blocks []block
	var errs []error
	lines := strings.Split(content, "\n")
	for i := 0; i < len(lines); i++ {
		trimmed := strings.TrimLeft(lines[i], " ")
		if !strings.HasPrefix(trimmed, "```") {
			continue
		}
		indent := len(lines[i]) - len(trimmed)
		b := block{file: file, line: i + 1, lang: strings.TrimSpace(trimmed[3:]), dirs: map[string]string{}}
		if i > 0 {
			if m := directiveRE.FindStringSubmatch(lines[i-1]); m != nil {
				d, err := parseDirectives(m[1])
				if err != nil {
					errs = append(errs, fmt.Errorf("%s:%d: %v", file, i, err))
				}
				b.dirs = d
			}
		}
		var body []string
		closed := false
		for i++; i < len(lines); i++ {
			if strings.TrimSpace(lines[i]) == "```" {
				closed = true
				break
			}
			l := lines[i]
			if len(l) >= indent && strings.TrimSpace(l[:indent]) == "" {
				l = l[indent:]
			}
			body = append(body, l)
		}
		b.text = strings.Join(body, "\n") + "\n"
		switch {
		case !closed:
			errs = append(errs, fmt.Errorf("%s: the block opened on line %d is not closed", file, b.line))
		case b.lang == "":
			errs = append(errs, fmt.Errorf("%s: the block on line %d has no language: use sh for commands "+
				"(run by TestDocs), or text, console, ini, yaml, json, go or sql", file, b.line))
		case !languages[b.lang]:
			errs = append(errs, fmt.Errorf("%s: the block on line %d has language %q: use sh for commands "+
				"(run by TestDocs), or text, console, ini, yaml, json, go or sql", file, b.line, b.lang))
		}
		if len(b.dirs) > 0 && b.lang != "sh" {
			errs = append(errs, fmt.Errorf("%s: docs-test directives before the %s block on line %d: only sh blocks run", file, b.lang, b.line))
		}
		blocks = append(blocks, b)
	}
	return blocks, errs
}

var knownDirectives = map[string]bool{"dir": true, "backend": true, "background": true, "wait": true, "module": true,
	"env": true, "needs": true, "setup": true, "cleanup": true, "expect": true, "noerrexit": true, "timeout": true,
	"keep": true, "stopkept": true}

// parseDirectives splits `key=value key="a value" flag`.
func parseDirectives(s string) (map[string]string, error) {
	d := map[string]string{}
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		end := strings.IndexAny(s, " =")
		if end < 0 {
			end = len(s)
		}
		key, val := s[:end], ""
		s = s[end:]
		if strings.HasPrefix(s, "=") {
			s = s[1:]
			if strings.HasPrefix(s, `"`) {
				close := strings.Index(s[1:], `"`)
				if close < 0 {
					return d, fmt.Errorf("docs-test: unclosed quote after %s=", key)
				}
				val, s = s[1:1+close], s[2+close:]
			} else {
				e := strings.IndexByte(s, ' ')
				if e < 0 {
					e = len(s)
				}
				val, s = s[:e], s[e:]
			}
		}
		if !knownDirectives[key] {
			return d, fmt.Errorf("docs-test: unknown key %q (known: dir backend background wait module env needs setup cleanup expect noerrexit timeout keep stopkept)", key)
		}
		d[key] = val
	}
	return d, nil
}

func TestParse(t *testing.T) {
	md := "intro\n\n<!-- docs-test: dir=bench env=\"A=1 B=2\" noerrexit -->\n```sh\n  echo hi\n```\n\n" +
		"```json\n{}\n```\n\n```\nbare\n```\n\n   ```sh\n   indented\n   ```\n"
	blocks, errs := parse("x.md", md)
	if len(blocks) != 4 {
		t.Fatalf("%d blocks: %+v", len(blocks), blocks)
	}
	b := blocks[0]
	if b.line != 4 || b.lang != "sh" || b.text != "  echo hi\n" || b.dirs["dir"] != "bench" || b.dirs["env"] != "A=1 B=2" {
		t.Errorf("first block %+v", b)
	}
	if _, ok := b.dirs["noerrexit"]; !ok {
		t.Errorf("noerrexit missing: %+v", b.dirs)
	}
	if blocks[3].text != "indented\n" {
		t.Errorf("indented block %q", blocks[3].text)
	}
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "x.md: the block on line 12 has no language") {
		t.Errorf("errors %v, want one for the bare fence", errs)
	}
	if _, err := parseDirectives("bogus=1"); err == nil {
		t.Error("an unknown key is accepted")
	}
	if _, errs := parse("y.md", "<!-- docs-test: dir=x -->\n```text\nx\n```\n"); len(errs) != 1 {
		t.Errorf("directives on a text block: %v", errs)
	}
}

// TestDocs runs every sh block of README.md and docs/*.md. It takes
// minutes (it runs ./scripts/test in quick mode, the benchmarks once, the
// example backend), so it runs only with INSTANCELOCK_DOCS_TEST=1, which
// scripts/test sets in its own step.
func TestDocs(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	files = append([]string{filepath.Join(root, "README.md")}, files...)
	var blocks []block
	for _, f := range files {
		content, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, f)
		bs, errs := parse(rel, string(content))
		for _, err := range errs {
			t.Error(err)
		}
		for _, b := range bs {
			if b.lang == "sh" {
				blocks = append(blocks, b)
			}
		}
	}
	if len(blocks) == 0 {
		t.Fatal("no sh block found")
	}
	if os.Getenv("INSTANCELOCK_DOCS_TEST") != "1" {
		t.Skipf("the %d command blocks take minutes: INSTANCELOCK_DOCS_TEST=1 go test -run TestDocs ./internal/docstest "+
			"(scripts/test does); the fences were checked", len(blocks))
	}
	sb := newSandbox(t, root)
	t.Cleanup(sb.stopKept)
	for _, b := range blocks {
		t.Run(b.name(), func(t *testing.T) { sb.run(t, b) })
	}
}

// sandbox is a copy of the repository where the blocks run, with a bin
// directory first on PATH (GOBIN points there too).
type sandbox struct {
	root, bin string
	env       []string
	kept      []int // process groups of keep blocks, ended by stopkept or at the end
	buildOnce sync.Once
	backend   string // the built example backend
	buildErr  error
}

func newSandbox(t *testing.T, repo string) *sandbox {
	t.Helper()
	dir := t.TempDir()
	sb := &sandbox{root: filepath.Join(dir, "repo"), bin: filepath.Join(dir, "bin")}
	out, err := exec.Command("git", "-C", repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	for _, f := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		src := filepath.Join(repo, f)
		fi, err := os.Lstat(src)
		if err != nil || !fi.Mode().IsRegular() {
			continue // deleted in the work tree, or not a file
		}
		dst := filepath.Join(sb.root, f)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(sb.bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "PID_FILE_PATH", "PORT", "PROCESS_MANAGER_DEBUG", "LOCK_URL", "NOTIFY_SOCKET", "WATCHDOG_USEC",
			"WATCHDOG_PID", "INSTANCELOCK_DOCS_TEST", "GOBIN", "PATH":
			continue
		}
		sb.env = append(sb.env, kv)
	}
	sb.env = append(sb.env, "PATH="+sb.bin+string(os.PathListSeparator)+os.Getenv("PATH"), "GOBIN="+sb.bin)
	// The operator's command, as the docs install it (go install
	// ./cmd/instancelock), for the blocks of the pages that only use it.
	cmd := exec.Command("go", "build", "-o", filepath.Join(sb.bin, "instancelock"), "./cmd/instancelock")
	cmd.Dir, cmd.Env = sb.root, sb.env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building cmd/instancelock: %v\n%s", err, out)
	}
	return sb
}

// stopKept ends the process groups that keep blocks left running.
func (sb *sandbox) stopKept() {
	for _, pgid := range sb.kept {
		killGroup(pgid)
	}
	sb.kept = nil
}

// backendBinary builds the example backend once.
func (sb *sandbox) backendBinary(t *testing.T) string {
	t.Helper()
	sb.buildOnce.Do(func() {
		sb.backend = filepath.Join(sb.bin, "backend")
		cmd := exec.Command("go", "build", "-o", sb.backend, ".")
		cmd.Dir = filepath.Join(sb.root, "examples", "backend")
		cmd.Env = sb.env
		if out, err := cmd.CombinedOutput(); err != nil {
			sb.buildErr = fmt.Errorf("building the example backend: %v\n%s", err, out)
		}
	})
	if sb.buildErr != nil {
		t.Fatal(sb.buildErr)
	}
	return sb.backend
}

// run runs one block with its context.
func (sb *sandbox) run(t *testing.T, b block) {
	d := b.dirs
	for _, prog := range strings.Split(d["needs"], ",") {
		if prog == "" {
			continue
		}
		if prog == "root" {
			if os.Geteuid() != 0 {
				t.Skip("the block is run as root (CI runs as root)")
			}
			continue
		}
		if _, err := exec.LookPath(prog); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("the block needs %s: %v (.ci/run installs it)", prog, err)
			}
			t.Skipf("the block needs %s, which is not installed here (under CI=true this fails)", prog)
		}
	}
	dir := filepath.Join(sb.root, filepath.FromSlash(d["dir"]))
	env := append([]string(nil), sb.env...)
	env = append(env, strings.Fields(d["env"])...)
	if _, ok := d["module"]; ok {
		dir = sb.module(t, env)
		env = append(env, "GOFLAGS=-mod=mod", "GOPROXY=off", "GOSUMDB=off")
	}
	timeout := 10 * time.Minute
	if s := d["timeout"]; s != "" {
		var err error
		if timeout, err = time.ParseDuration(s); err != nil {
			t.Fatalf("timeout=%s: %v", s, err)
		}
	}
	if c := d["cleanup"]; c != "" {
		t.Cleanup(func() {
			cmd := exec.Command("bash", "-c", c)
			cmd.Dir, cmd.Env = dir, env
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Logf("cleanup %q: %v\n%s", c, err, out)
			}
		})
	}

	if c := d["setup"]; c != "" {
		cmd := exec.Command("bash", "-c", c)
		cmd.Dir, cmd.Env = dir, env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Logf("setup %q: %v\n%s", c, err, out)
		}
	}
	if _, ok := d["stopkept"]; ok {
		defer sb.stopKept()
	}

	script := b.text
	if _, ok := d["backend"]; ok {
		sb.startBackend(t, dir, env, d["backend"])
	}
	if n := d["background"]; n != "" {
		var bg string
		script, bg = splitLine(t, script, n)
		addr := d["wait"]
		if addr == "" {
			addr = "127.0.0.1:3000"
		}
		startBackground(t, dir, env, bg, addr)
	}

	header := "set -o pipefail\n"
	if _, ok := d["noerrexit"]; !ok {
		header += "set -e\n"
	}
	_, keep := d["keep"]
	out, pgid, err := runGroup(t, dir, env, header+script, timeout, keep)
	if keep {
		sb.kept = append(sb.kept, pgid)
	}
	if err != nil {
		t.Fatalf("the block failed: %v\n--- block (in %s):\n%s--- output:\n%s", err, d["dir"], b.text, tail(out))
	}
	if re := d["expect"]; re != "" {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Fatalf("the output does not match %q\n--- block:\n%s--- output:\n%s", re, b.text, tail(out))
		}
	}
	t.Logf("ok; output:\n%s", tail(out))
}

// module makes a new Go module that requires the sandbox's module through a
// replace directive, as a user's program would after go get.
func (sb *sandbox) module(t *testing.T, env []string) string {
	t.Helper()
	dir := t.TempDir()
	for _, args := range [][]string{
		{"mod", "init", "example.com/app"},
		{"mod", "edit", "-replace", "github.com/ad5dec64/instancelock=" + sb.root},
	} {
		cmd := exec.Command("go", args...)
		cmd.Dir, cmd.Env = dir, env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return dir
}

// splitLine removes line n (1-based) from script and returns both.
func splitLine(t *testing.T, script, n string) (rest, line string) {
	t.Helper()
	var k int
	if _, err := fmt.Sscan(n, &k); err != nil {
		t.Fatalf("background=%s: want a line number", n)
	}
	lines := strings.Split(script, "\n")
	if k < 1 || k > len(lines) {
		t.Fatalf("background=%d: the block has %d lines", k, len(lines))
	}
	line = lines[k-1]
	lines = append(lines[:k-1], lines[k:]...)
	return strings.Join(lines, "\n"), line
}

// portFree waits up to two minutes for addr to be free (another run of
// these blocks on the same machine may hold it for a while), then fails
// (under CI) or skips the test.
func portFree(t *testing.T, addr string) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Second) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return
		}
		c.Close()
		if time.Now().Before(deadline) {
			continue
		}
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is in use by another program; the docs' commands use it", addr)
		}
		t.Skipf("%s is in use by another program, and the docs' commands use it (under CI=true this fails)", addr)
	}
}

// startBackend runs the example backend in dir until the test ends, and
// waits until it is ready.
func (sb *sandbox) startBackend(t *testing.T, dir string, env []string, args string) {
	t.Helper()
	portFree(t, "127.0.0.1:3000")
	cmd := exec.Command(sb.backendBinary(t), strings.Fields(args)...)
	cmd.Dir, cmd.Env = dir, env
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("the backend's log:\n%s", tail(log.String()))
		}
	})
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get("http://127.0.0.1:3000/api/health")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-exited:
			t.Fatalf("the backend exited before it was ready:\n%s", log.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the backend was not ready within a minute:\n%s", log.String())
		}
	}
}

// startBackground runs line in dir, in its own process group, until the
// test ends (then it gets SIGINT, as Ctrl-C in its terminal), and waits
// until addr accepts connections.
func startBackground(t *testing.T, dir string, env []string, line, addr string) {
	t.Helper()
	portFree(t, addr)
	cmd := exec.Command("bash", "-c", line)
	cmd.Dir, cmd.Env = dir, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var log syncBuffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	pgid := cmd.Process.Pid
	t.Cleanup(func() {
		syscall.Kill(-pgid, syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			t.Errorf("%q did not stop within 30 s of SIGINT", line)
			syscall.Kill(-pgid, syscall.SIGKILL)
			<-exited
		}
		killGroup(pgid)
		t.Logf("%q in the background said:\n%s", line, tail(log.String()))
	})
	// go run builds SQLite first: about 80 s on a cold machine.
	deadline := time.Now().Add(5 * time.Minute)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("%q exited before %s answered:\n%s", line, addr, log.String())
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q: %s did not answer within 5 minutes:\n%s", line, addr, log.String())
		}
	}
}

// runGroup runs script under bash in its own process group, kills what is
// left of the group when it ends unless keep is set, and returns its
// output and the group.
func runGroup(t *testing.T, dir string, env []string, script string, timeout time.Duration, keep bool) (string, int, error) {
	t.Helper()
	cmd := exec.Command("bash", "-c", script)
	cmd.Dir, cmd.Env = dir, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A file, not a pipe: what the block leaves running with & keeps its
	// output open, and Wait would wait for it.
	out, err := os.CreateTemp(t.TempDir(), "output")
	if err != nil {
		return "", 0, err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return "", 0, err
	}
	pgid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(timeout):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
		err = fmt.Errorf("still running after %v", timeout)
	}
	if !keep || err != nil {
		killGroup(pgid)
	}
	b, _ := os.ReadFile(out.Name())
	return string(b), pgid, err
}

// killGroup ends what is left of a process group: SIGTERM, then SIGKILL
// after 10 s.
func killGroup(pgid int) {
	if syscall.Kill(-pgid, syscall.SIGTERM) != nil {
		return // nothing left
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
	}
	syscall.Kill(-pgid, syscall.SIGKILL)
}

// tail returns the last 16 KiB of s.
func tail(s string) string {
	if len(s) > 16<<10 {
		return "…" + s[len(s)-16<<10:]
	}
	return s
}

// syncBuffer is a bytes.Buffer safe for concurrent writes and reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
