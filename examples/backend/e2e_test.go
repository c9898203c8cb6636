//go:build unix

package main

// End-to-end tests: the spec's phases 4 (startup) and 5 (shutdown) against
// the built binary. TestMain makes a temporary directory; the first test
// that needs the binary builds it there once (go build -race), and every
// test runs it as a child process with its PID file and database in
// t.TempDir() and a free loopback port, and talks to it over HTTP on
// loopback only. Timeouts below are generous liveness bounds, not speed
// goals; the durations measured are logged (go test -v).

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock/internal/testserver"
)

var (
	binDir    string
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "backend-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	testserver.StopShared() // the PostgreSQL and Redis of the fleet tests
	os.RemoveAll(dir)
	os.Exit(code)
}

// backendBinary returns the path of the backend built with -race, building
// it on first use.
func backendBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		start := time.Now()
		out := filepath.Join(binDir, "backend")
		cmd := exec.Command("go", "build", "-race", "-buildvcs=false", "-o", out, ".")
		b, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build -race: %v\n%s", err, b)
			return
		}
		binPath = out
		fmt.Fprintf(os.Stderr, "e2e: built %s in %v\n", out, time.Since(start).Round(time.Millisecond))
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Liveness bounds.
const (
	readyTimeout = 30 * time.Second // a -race binary on a loaded 2-core machine
	exitTimeout  = 30 * time.Second
)

// backend is one run of the binary.
type backend struct {
	t       *testing.T
	cmd     *exec.Cmd
	pidfile string
	db      string
	port    int
	started time.Time

	ready   chan struct{} // closed when the "ready" line is logged
	exited  chan struct{} // closed when the process has exited and its output is read
	code    int           // the exit code (-1 when killed by a signal), set before exited is closed
	readyAt time.Time

	mu    sync.Mutex
	lines []string
}

// launch describes a run: the directory holding the PID file and database,
// the port, and extra flags.
type launch struct {
	dir   string
	port  int
	flags []string
	env   []string // added to a clean environment
	cwd   string   // "" leaves -pidfile and -db set from dir
}

// cleanEnv is the test's environment without the variables the backend
// reads, so that the caller's shell cannot change the tests. The race
// detector's one-second pause at exit is cut to 100 ms; a race found in the
// backend makes it exit 66 and print "DATA RACE", which fails the test.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "PID_FILE_PATH", "PORT", "PROCESS_MANAGER_DEBUG", "GORACE", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID":
			continue
		}
		env = append(env, kv)
	}
	return append(append(env, "GORACE=atexit_sleep_ms=100"), extra...)
}

// start runs the backend and returns at once.
func start(t *testing.T, l launch) *backend {
	t.Helper()
	b := &backend{t: t, port: l.port, ready: make(chan struct{}), exited: make(chan struct{})}
	var args []string
	if l.cwd == "" {
		b.pidfile = filepath.Join(l.dir, "backend.pid")
		b.db = filepath.Join(l.dir, "backend.db")
		args = append(args, "-pidfile", b.pidfile, "-addr", "127.0.0.1:"+strconv.Itoa(l.port))
	} else {
		b.pidfile = filepath.Join(l.cwd, "data", "backend.pid")
		b.db = filepath.Join(l.cwd, "data", "backend.db")
	}
	args = append(args, l.flags...)
	b.cmd = exec.Command(backendBinary(t), args...)
	b.cmd.Dir = l.cwd
	b.cmd.Env = cleanEnv(l.env...)
	stderr, err := b.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	b.started = time.Now()
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		readySeen := false
		for sc.Scan() {
			line := sc.Text()
			b.mu.Lock()
			b.lines = append(b.lines, line)
			b.mu.Unlock()
			if !readySeen && strings.Contains(line, " msg=ready ") {
				readySeen = true
				b.readyAt = time.Now()
				close(b.ready)
			}
		}
		err := b.cmd.Wait()
		b.code = b.cmd.ProcessState.ExitCode()
		if err != nil && b.code == 0 {
			b.code = -2
		}
		close(b.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-b.exited:
		default:
			b.cmd.Process.Kill()
			<-b.exited
		}
		if strings.Contains(b.log(), "DATA RACE") {
			t.Errorf("the race detector found a race in pid %d", b.pid())
		}
		if t.Failed() {
			t.Logf("log of pid %d:\n%s", b.pid(), b.log())
		}
	})
	return b
}

func (b *backend) pid() int { return b.cmd.Process.Pid }

// log returns everything the process wrote to stderr so far.
func (b *backend) log() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines, "\n")
}

// waitReady waits for the "ready" line and checks it names the address.
func (b *backend) waitReady() {
	b.t.Helper()
	select {
	case <-b.ready:
	case <-b.exited:
		b.t.Fatalf("pid %d exited with %d before it was ready:\n%s", b.pid(), b.code, b.log())
	case <-time.After(readyTimeout):
		b.t.Fatalf("pid %d not ready within %v:\n%s", b.pid(), readyTimeout, b.log())
	}
	addr := fmt.Sprintf("addr=127.0.0.1:%d", b.port)
	if !strings.Contains(b.lineWith(" msg=ready "), addr) {
		b.t.Fatalf("the ready line does not name %s:\n%s", addr, b.log())
	}
}

// waitExit waits for the process to exit and returns its exit code.
func (b *backend) waitExit(d time.Duration) int {
	b.t.Helper()
	select {
	case <-b.exited:
		return b.code
	case <-time.After(d):
		b.t.Fatalf("pid %d still running after %v:\n%s", b.pid(), d, b.log())
	}
	return 0
}

func (b *backend) signal(sig os.Signal) {
	b.t.Helper()
	if err := b.cmd.Process.Signal(sig); err != nil {
		b.t.Fatalf("signal %v to pid %d: %v", sig, b.pid(), err)
	}
}

// lineWith returns the first line of the log containing s, or "".
func (b *backend) lineWith(s string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, l := range b.lines {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

// lineIndex returns the index of the first line containing s, or -1.
func (b *backend) lineIndex(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, l := range b.lines {
		if strings.Contains(l, s) {
			return i
		}
	}
	return -1
}

var httpClient = &http.Client{
	Timeout:   10 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
}

// call sends a request to the backend and decodes the JSON answer into out
// (if not nil). It returns the status code, or an error if the request
// could not be sent.
func (b *backend) call(method, path string, out any) (int, error) {
	req, err := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d%s", b.port, path), nil)
	if err != nil {
		return 0, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %v in %q", method, path, err, body)
		}
	}
	return resp.StatusCode, nil
}

// must is call that fails the test on a transport error or an unexpected
// status.
func (b *backend) must(method, path string, wantCode int, out any) {
	b.t.Helper()
	code, err := b.call(method, path, out)
	if err != nil {
		b.t.Fatal(err)
	}
	if code != wantCode {
		b.t.Fatalf("%s %s = %d; want %d", method, path, code, wantCode)
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	port, err := testserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// eventually polls cond every 10 ms until it returns true, failing the test
// after d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
	}
}

// waitRows waits until the backend reports at least n rows in its database.
func (b *backend) waitRows(n int64) messageStats {
	b.t.Helper()
	var st messageStats
	eventually(b.t, 20*time.Second, fmt.Sprintf("%d rows", n), func() bool {
		b.must("GET", "/api/messages", 200, &st)
		return st.Total >= n
	})
	return st
}

// healthBody is the spec's /api/health answer, as far as the tests read it.
type healthBody struct {
	Status         string    `json:"status"`
	PID            int       `json:"pid"`
	Uptime         int64     `json:"uptime"`
	ActiveAgents   *int      `json:"activeAgents"`
	TotalAgents    *int      `json:"totalAgents"`
	DatabaseStatus string    `json:"databaseStatus"`
	StartedAt      time.Time `json:"startedAt"`
	Timestamp      time.Time `json:"timestamp"`
	InstanceID     string    `json:"instanceId"`
}

func (h healthBody) agents() (active, total int) {
	if h.ActiveAgents != nil {
		active = *h.ActiveAgents
	} else {
		active = -1
	}
	if h.TotalAgents != nil {
		total = *h.TotalAgents
	} else {
		total = -1
	}
	return active, total
}

func readPIDFile(t *testing.T, path string) (pid, port int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var pf struct {
		PID  int `json:"pid"`
		Port int `json:"port"`
	}
	if err := json.Unmarshal(data, &pf); err != nil {
		t.Fatalf("PID file %s: %v in %q", path, err, data)
	}
	return pf.PID, pf.Port
}

func assertGone(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s still exists (%v)", path, err)
	}
}

// rowsByPID opens the database (no backend may run on it) and returns its
// integrity check and the rows per writer pid.
func rowsByPID(t *testing.T, path string) map[int]int64 {
	t.Helper()
	db, err := OpenDB(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	var integrity string
	if err := db.sql.QueryRow("PRAGMA integrity_check").Scan(&integrity); err != nil || integrity != "ok" {
		t.Fatalf("integrity_check = %q, %v", integrity, err)
	}
	ws, err := db.Writers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m := map[int]int64{}
	for _, w := range ws {
		m[w.PID] += w.Rows
	}
	return m
}

// --- Phase 4: startup ---

func TestE2EStartupSecondInstanceRefused(t *testing.T) {
	t.Parallel()
	dir, port := t.TempDir(), freePort(t)
	first := start(t, launch{dir: dir, port: port, flags: []string{"-agent-interval", "20ms"}})
	first.waitReady()
	t.Logf("first launch ready in %v", first.readyAt.Sub(first.started).Round(time.Millisecond))
	first.waitRows(1)

	// The second launch uses another port, so only the lock can refuse it.
	second := start(t, launch{dir: dir, port: freePort(t)})
	if code := second.waitExit(exitTimeout); code != 1 {
		t.Fatalf("second launch exited %d; want 1:\n%s", code, second.log())
	}
	msg := second.log()
	for _, want := range []string{
		"Another instance is already running.",
		fmt.Sprintf("PID:      %d", first.pid()),
		fmt.Sprintf("Port:     %d", port),
		fmt.Sprintf("kill %d", first.pid()),
		fmt.Sprintf("kill -9 %d && ", first.pid()),
		fmt.Sprintf("curl http://localhost:%d/api/health", port),
		"╔", "╝",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("the second launch's message lacks %q:\n%s", want, msg)
		}
	}
	// It stopped before touching the database or the port.
	for _, never := range []string{"database opened", "listening", "agent started"} {
		if strings.Contains(msg, never) {
			t.Errorf("the refused launch logged %q:\n%s", never, msg)
		}
	}
	// The first one is unaffected.
	var h healthBody
	first.must("GET", "/api/health", 200, &h)
	if h.PID != first.pid() || h.Status != "ok" {
		t.Fatalf("first's health after the refused launch: %+v", h)
	}
	if pid, p := readPIDFile(t, first.pidfile); pid != first.pid() || p != port {
		t.Fatalf("PID file names pid %d port %d; want %d %d", pid, p, first.pid(), port)
	}

	// After a clean shutdown the next launch succeeds.
	first.signal(syscall.SIGTERM)
	if code := first.waitExit(exitTimeout); code != 0 {
		t.Fatalf("first exited %d after SIGTERM; want 0", code)
	}
	assertGone(t, first.pidfile)
	third := start(t, launch{dir: dir, port: port})
	third.waitReady()
	third.must("GET", "/api/health", 200, &h)
	if h.PID != third.pid() {
		t.Fatalf("health answered by pid %d; want %d", h.PID, third.pid())
	}
	third.signal(syscall.SIGTERM)
	if code := third.waitExit(exitTimeout); code != 0 {
		t.Fatalf("third exited %d; want 0", code)
	}
}

func TestE2EStartupAfterSIGKILL(t *testing.T) {
	t.Parallel()
	dir, port := t.TempDir(), freePort(t)
	first := start(t, launch{dir: dir, port: port, flags: []string{"-agent-interval", "5ms", "-agents", "3"}})
	first.waitReady()
	first.waitRows(30)
	// Rows the agents report committed: all of them must survive the kill.
	var list agentList
	first.must("GET", "/api/agents", 200, &list)
	var acked int64
	for _, a := range list.Agents {
		acked += a.Messages
	}
	if acked == 0 {
		t.Fatal("no acknowledged rows before the kill")
	}
	first.signal(syscall.SIGKILL)
	first.waitExit(exitTimeout)
	// The PID file is left behind, naming a dead process.
	if pid, _ := readPIDFile(t, first.pidfile); pid != first.pid() {
		t.Fatalf("stale PID file names %d; want %d", pid, first.pid())
	}

	second := start(t, launch{dir: dir, port: port})
	second.waitReady()
	t.Logf("launch after SIGKILL ready in %v", second.readyAt.Sub(second.started).Round(time.Millisecond))
	if strings.Contains(second.log(), "already running") {
		t.Fatalf("the launch after a SIGKILL saw the dead instance as running:\n%s", second.log())
	}
	if pid, _ := readPIDFile(t, second.pidfile); pid != second.pid() {
		t.Fatalf("PID file names %d; want the new instance %d", pid, second.pid())
	}
	var st messageStats
	second.must("GET", "/api/messages", 200, &st)
	var fromFirst int64
	for _, w := range st.Writers {
		if w.PID == first.pid() {
			fromFirst += w.Rows
		}
	}
	if fromFirst < acked {
		t.Fatalf("after the kill the database has %d rows from pid %d; it had acknowledged %d", fromFirst, first.pid(), acked)
	}
	second.signal(syscall.SIGTERM)
	if code := second.waitExit(exitTimeout); code != 0 {
		t.Fatalf("second exited %d; want 0", code)
	}
	rows := rowsByPID(t, second.db) // also checks integrity
	if rows[first.pid()] < acked || rows[second.pid()] == 0 {
		t.Fatalf("rows by pid %v; want ≥ %d from %d and some from %d", rows, acked, first.pid(), second.pid())
	}
	t.Logf("%d rows acknowledged before SIGKILL, %d found", acked, rows[first.pid()])
}

func TestE2EStartupPortTaken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	squatter, err := net.Listen("tcp", "127.0.0.1:0") // "something else" holds the port
	if err != nil {
		t.Fatal(err)
	}
	defer squatter.Close()
	port := squatter.Addr().(*net.TCPAddr).Port

	b := start(t, launch{dir: dir, port: port})
	if code := b.waitExit(exitTimeout); code != 1 {
		t.Fatalf("exit code %d; want 1:\n%s", code, b.log())
	}
	msg := b.log()
	for _, want := range []string{
		fmt.Sprintf("Port %d is already in use by another program", port),
		fmt.Sprintf("127.0.0.1:%d", port),
		`msg="lock released"`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("log lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, " msg=ready ") {
		t.Fatal("it logged ready")
	}
	assertGone(t, b.pidfile) // the lock was released
	// And the next launch, on a free port, gets the lock.
	next := start(t, launch{dir: dir, port: freePort(t)})
	next.waitReady()
	next.signal(syscall.SIGTERM)
	if code := next.waitExit(exitTimeout); code != 0 {
		t.Fatalf("exit code %d; want 0", code)
	}
}

// TestE2EDefaults runs the binary as `go run .` would from a fresh clone:
// no flags, in an empty directory; data/ is created there. PORT and
// PROCESS_MANAGER_DEBUG come from the environment.
func TestE2EDefaults(t *testing.T) {
	t.Parallel()
	cwd, port := t.TempDir(), freePort(t)
	b := start(t, launch{cwd: cwd, port: port, env: []string{"PORT=" + strconv.Itoa(port), "PROCESS_MANAGER_DEBUG=true"}})
	b.waitReady()
	if pid, p := readPIDFile(t, b.pidfile); pid != b.pid() || p != port {
		t.Fatalf("data/backend.pid names pid %d port %d; want %d %d", pid, p, b.pid(), port)
	}
	if _, err := os.Stat(b.db); err != nil {
		t.Fatalf("no database next to the PID file: %v", err)
	}
	b.waitRows(2) // the default 2 agents
	if b.lineWith("level=DEBUG") == "" {
		t.Errorf("PROCESS_MANAGER_DEBUG=true gave no debug logs:\n%s", b.log())
	}
	b.signal(syscall.SIGTERM)
	if code := b.waitExit(exitTimeout); code != 0 {
		t.Fatalf("exit code %d; want 0", code)
	}
	assertGone(t, b.pidfile)

	// PID_FILE_PATH moves the PID file, and the database with it.
	dir := t.TempDir()
	b2 := start(t, launch{cwd: cwd, port: port, env: []string{"PORT=" + strconv.Itoa(port),
		"PID_FILE_PATH=" + filepath.Join(dir, "other.pid")}})
	b2.waitReady()
	if pid, _ := readPIDFile(t, filepath.Join(dir, "other.pid")); pid != b2.pid() {
		t.Fatalf("PID_FILE_PATH's file names %d; want %d", pid, b2.pid())
	}
	if _, err := os.Stat(filepath.Join(dir, "backend.db")); err != nil {
		t.Fatalf("no database next to PID_FILE_PATH: %v", err)
	}
	if b2.lineWith("level=DEBUG") != "" {
		t.Error("debug logs without PROCESS_MANAGER_DEBUG")
	}
	b2.signal(syscall.SIGINT)
	if code := b2.waitExit(exitTimeout); code != 0 {
		t.Fatalf("exit code %d; want 0", code)
	}
}

// --- Phase 5: shutdown ---

var agentStoppedRE = regexp.MustCompile(`msg="agent stopped" agent=(\S+) messages=(\d+)`)

// SIGTERM, SIGINT and SIGHUP (a closed terminal) all run the whole
// shutdown and exit 0 (the backend sets no GracefulShutdown.Hangup).
func TestE2EShutdownOnSignal(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			dir, port := t.TempDir(), freePort(t)
			b := start(t, launch{dir: dir, port: port, flags: []string{"-agent-interval", "5ms", "-agents", "3", "-shutdown-timeout", "5s"}})
			b.waitReady()
			b.waitRows(20)

			// An idle keep-alive connection: the shutdown must close it.
			conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			br := bufio.NewReader(conn)
			fmt.Fprintf(conn, "GET /livez HTTP/1.1\r\nHost: localhost\r\n\r\n")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.Close {
				t.Fatalf("keep-alive request: %d, close=%v", resp.StatusCode, resp.Close)
			}

			sent := time.Now()
			b.signal(sig)
			code := b.waitExit(exitTimeout)
			t.Logf("exited %d, %v after %v", code, time.Since(sent).Round(time.Millisecond), sig)
			if code != 0 {
				t.Fatalf("exit code %d after %v; want 0", code, sig)
			}
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := br.ReadByte(); err != io.EOF {
				t.Errorf("idle connection after shutdown: read %v, %v; want EOF", n, err)
			}

			// The spec's order: readiness 503 (state stopping), HTTP server,
			// agents, database, lock.
			log := b.log()
			steps := []string{
				`msg="signal received" signal=` + sig.String(),
				`msg="shutdown started"`,
				`msg="http server stopped"`,
				`msg="agents stopped"`,
				`msg="database closed"`,
				`msg="lock released"`,
				`msg="shutdown finished"`,
			}
			last := -1
			for _, s := range steps {
				i := b.lineIndex(s)
				if i < 0 {
					t.Fatalf("no %s in the log:\n%s", s, log)
				}
				if i <= last {
					t.Fatalf("%s is out of order:\n%s", s, log)
				}
				last = i
			}
			if !strings.Contains(b.lineWith(`msg="shutdown finished"`), "failures=0") {
				t.Errorf("shutdown had failures:\n%s", log)
			}
			for _, bad := range []string{"level=ERROR", "level=WARN", "abandoned"} {
				if strings.Contains(log, bad) {
					t.Errorf("log has %s:\n%s", bad, log)
				}
			}
			t.Log(b.lineWith(`msg="shutdown finished"`))

			// Lock released, WAL checkpointed and removed, port free.
			assertGone(t, b.pidfile)
			assertGone(t, b.db+"-wal")
			assertGone(t, b.db+"-shm")
			if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
				t.Errorf("port %d not free after exit: %v", port, err)
			} else {
				l.Close()
			}
			// Every row an agent had committed is in the database file.
			rows := rowsByPID(t, b.db)
			stopped := agentStoppedRE.FindAllStringSubmatch(log, -1)
			if len(stopped) != 3 {
				t.Fatalf("%d agents logged stopping; want 3:\n%s", len(stopped), log)
			}
			var acked int64
			for _, m := range stopped {
				n, _ := strconv.ParseInt(m[2], 10, 64)
				acked += n
			}
			if got := rows[b.pid()]; got < acked || got > acked+3 {
				t.Fatalf("database has %d rows from pid %d; the agents committed %d", got, b.pid(), acked)
			}
		})
	}
}

// The backend's stderr is a pipe whose reader exits (a log shipper, | tee)
// once the backend is ready. SIGTERM still runs every hook: exit 0, the PID
// file removed, the WAL checkpointed and removed, the agents' rows kept.
func TestE2EStderrReaderGone(t *testing.T) {
	t.Parallel()
	dir, port := t.TempDir(), freePort(t)
	pidfile, db := filepath.Join(dir, "backend.pid"), filepath.Join(dir, "backend.db")
	cmd := exec.Command(backendBinary(t), "-pidfile", pidfile, "-addr", "127.0.0.1:"+strconv.Itoa(port),
		"-agent-interval", "5ms", "-agents", "2")
	cmd.Env = cleanEnv()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	timeout := time.After(readyTimeout)
	for ready := false; !ready; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the backend exited before it was ready: %v", cmd.ProcessState)
			}
			ready = strings.Contains(l, " msg=ready ")
		case <-timeout:
			t.Fatalf("not ready within %v", readyTimeout)
		}
	}
	r.Close() // the reader exits: the backend's next log line meets a closed pipe
	b := &backend{t: t, port: port}
	b.waitRows(10)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(exitTimeout):
		t.Fatalf("still running %v after SIGTERM", exitTimeout)
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit %v after SIGTERM with its stderr reader gone; want 0", cmd.ProcessState)
	}
	assertGone(t, pidfile)
	assertGone(t, db+"-wal")
	if rows := rowsByPID(t, db)[cmd.Process.Pid]; rows == 0 {
		t.Error("no rows of the agents in the database")
	}
}

func TestE2EReadinessDuringSlowShutdown(t *testing.T) {
	t.Parallel()
	dir, port := t.TempDir(), freePort(t)
	b := start(t, launch{dir: dir, port: port, flags: []string{"-drain", "4s", "-agent-interval", "20ms"}})
	b.waitReady()
	var h healthBody
	b.must("GET", "/readyz", 200, &h)

	b.signal(syscall.SIGTERM)
	// While draining, readiness says 503 "stopping", liveness still 200,
	// and the API still answers.
	eventually(t, 4*time.Second, "readiness 503", func() bool {
		code, err := b.call("GET", "/readyz", &h)
		if err != nil {
			t.Fatalf("readiness unreachable during the drain: %v", err)
		}
		return code == 503
	})
	if h.Status != "stopping" {
		t.Errorf("readiness status %q; want stopping", h.Status)
	}
	b.must("GET", "/api/health", 503, &h)
	if h.Status != "stopping" {
		t.Errorf("/api/health status %q; want stopping", h.Status)
	}
	b.must("GET", "/livez", 200, &h)
	if h.Status != "stopping" {
		t.Errorf("/livez status %q; want stopping", h.Status)
	}
	b.must("GET", "/api/agents", 200, nil)

	if code := b.waitExit(exitTimeout); code != 0 {
		t.Fatalf("exit code %d; want 0", code)
	}
	if b.lineIndex(`msg=draining`) < 0 || b.lineIndex(`msg=draining`) > b.lineIndex(`msg="http server stopped"`) {
		t.Errorf("no drain before the server stopped:\n%s", b.log())
	}
	assertGone(t, b.pidfile)
}

func TestE2EForcedExitOnSecondSignal(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			dir, port := t.TempDir(), freePort(t)
			b := start(t, launch{dir: dir, port: port, flags: []string{"-drain", "60s", "-shutdown-timeout", "60s"}})
			b.waitReady()
			b.signal(sig)
			eventually(t, 10*time.Second, "readiness 503", func() bool {
				code, err := b.call("GET", "/readyz", nil)
				return err == nil && code == 503
			})
			b.signal(sig)
			if code, want := b.waitExit(exitTimeout), 128+int(sig); code != want {
				t.Fatalf("exit code %d after a second %v; want %d", code, sig, want)
			}
			if b.lineWith("second signal") == "" {
				t.Errorf("no log of the second signal:\n%s", b.log())
			}
			// The next launch starts whether or not the forced exit managed
			// to remove the PID file.
			next := start(t, launch{dir: dir, port: port})
			next.waitReady()
			next.signal(syscall.SIGTERM)
			if code := next.waitExit(exitTimeout); code != 0 {
				t.Fatalf("exit code %d; want 0", code)
			}
		})
	}
}

// TestE2ELockLost: removing the PID file of a running instance (a temp
// cleaner, rm -rf data/) would let a second instance start; the instance
// notices, shuts down in order and exits 1.
// TestE2ELockLost: the PID file is replaced by someone's file, which the
// instance may not overwrite: it cannot keep its file in place, so it
// reports the loss and stops with exit 1.
func TestE2ELockLost(t *testing.T) {
	t.Parallel()
	dir, port := t.TempDir(), freePort(t)
	b := start(t, launch{dir: dir, port: port, flags: []string{"-agent-interval", "20ms"}})
	b.waitReady()
	replaceWithForeignFile(t, b.pidfile)
	if code := b.waitExit(exitTimeout); code != 1 {
		t.Fatalf("exit code %d after the PID file was replaced; want 1", code)
	}
	for _, want := range []string{"lock lost", `msg="agents stopped"`, `msg="database closed"`} {
		if b.lineWith(want) == "" {
			t.Errorf("log lacks %q:\n%s", want, b.log())
		}
	}
	rowsByPID(t, b.db) // the database is intact
}

// replaceWithForeignFile renames someone's file (not a PID file) over
// path.
func replaceWithForeignFile(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path+".notes", []byte("someone's notes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".notes", path); err != nil {
		t.Fatal(err)
	}
}

// TestE2ERemovedPIDFile: the input. rm data/backend.pid under a
// running instance, then start a second: it is refused (the first still
// holds the lock), the first puts its PID file back and keeps running, and
// the database has one writer, always.
func TestE2ERemovedPIDFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := start(t, launch{dir: dir, port: freePort(t), flags: []string{"-agent-interval", "5ms"}})
	a.waitReady()
	for round := range 5 {
		if err := os.Remove(a.pidfile); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		b := start(t, launch{dir: dir, port: freePort(t), flags: []string{"-agent-interval", "5ms"}})
		if code := b.waitExit(exitTimeout); code != 1 {
			t.Fatalf("round %d: the second instance exited %d; want 1 (refused):\n%s", round, code, b.log())
		}
		if !strings.Contains(b.log(), fmt.Sprintf("PID:      %d", a.pid())) {
			t.Fatalf("round %d: the refusal does not name the running instance %d:\n%s", round, a.pid(), b.log())
		}
		eventually(t, 10*time.Second, "the PID file to be put back", func() bool {
			data, err := os.ReadFile(a.pidfile)
			return err == nil && strings.Contains(string(data), fmt.Sprintf(`"pid":%d,`, a.pid()))
		})
		a.must("GET", "/readyz", 200, nil)
	}
	a.waitRows(20)
	a.signal(syscall.SIGTERM)
	if code := a.waitExit(exitTimeout); code != 0 {
		t.Fatalf("the instance exited %d; want 0:\n%s", code, a.log())
	}
	rows := rowsByPID(t, filepath.Join(dir, "backend.db"))
	if len(rows) != 1 || rows[a.pid()] == 0 {
		t.Errorf("rows by writer pid: %v; want only %d", rows, a.pid())
	}
	if a.lineWith("re-published") == "" {
		t.Errorf("the instance did not log that it put its file back:\n%s", a.log())
	}
}

// --- Single writer ---

func TestE2ESingleWriter(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const rounds = 3
	winners := map[int]bool{}
	losers := map[int]bool{}
	for round := range rounds {
		// Two launches at the same instant on the same PID file and
		// database, each with its own port: only the lock can keep one out.
		a := start(t, launch{dir: dir, port: freePort(t), flags: []string{"-agent-interval", "5ms"}})
		b := start(t, launch{dir: dir, port: freePort(t), flags: []string{"-agent-interval", "5ms"}})
		outcome := func(x *backend) bool { // true: ready
			select {
			case <-x.ready:
				return true
			case <-x.exited:
				return false
			case <-time.After(readyTimeout):
				t.Fatalf("round %d: pid %d neither ready nor exited:\n%s", round, x.pid(), x.log())
			}
			return false
		}
		aReady, bReady := outcome(a), outcome(b)
		if aReady == bReady {
			t.Fatalf("round %d: ready = %v and %v; want exactly one:\nA:\n%s\nB:\n%s", round, aReady, bReady, a.log(), b.log())
		}
		win, lose := a, b
		if bReady {
			win, lose = b, a
		}
		if code := lose.waitExit(exitTimeout); code != 1 {
			t.Fatalf("round %d: the loser exited %d; want 1:\n%s", round, code, lose.log())
		}
		if !strings.Contains(lose.log(), fmt.Sprintf("PID:      %d", win.pid())) {
			t.Fatalf("round %d: the loser's message does not name the winner %d:\n%s", round, win.pid(), lose.log())
		}
		win.waitRows(int64(20 * (round + 1)))
		win.signal(syscall.SIGTERM)
		if code := win.waitExit(exitTimeout); code != 0 {
			t.Fatalf("round %d: the winner exited %d; want 0", round, code)
		}
		winners[win.pid()], losers[lose.pid()] = true, true
	}
	rows := rowsByPID(t, filepath.Join(dir, "backend.db"))
	for pid, n := range rows {
		if !winners[pid] {
			t.Errorf("%d rows from pid %d, which was not a winner (loser: %v)", n, pid, losers[pid])
		}
	}
	for pid := range winners {
		if rows[pid] == 0 {
			t.Errorf("no rows from the winner %d", pid)
		}
	}
	t.Logf("rows by writer pid: %v; losers %v", rows, losers)
}

// --- Health ---

func TestE2EHealth(t *testing.T) {
	t.Parallel()
	dir, port := t.TempDir(), freePort(t)
	b := start(t, launch{dir: dir, port: port, flags: []string{"-warmup", "2s", "-agents", "2"}})

	// During startup: the port is bound, the instance is not ready.
	var h healthBody
	eventually(t, readyTimeout, "a health answer", func() bool {
		select {
		case <-b.exited:
			t.Fatalf("exited %d:\n%s", b.code, b.log())
		default:
		}
		code, err := b.call("GET", "/api/health", &h)
		if err != nil {
			return false // not listening yet
		}
		if code != 503 || h.Status != "starting" {
			t.Fatalf("first health answer: %d %+v; want 503 starting (is -warmup too short for this machine?)", code, h)
		}
		return true
	})
	if active, total := h.agents(); h.PID != b.pid() || active != 0 || total != 0 || h.DatabaseStatus != "connected" {
		t.Fatalf("health while starting: %+v (agents %d/%d)", h, active, total)
	}
	b.must("GET", "/readyz", 503, nil)
	b.must("GET", "/livez", 200, &h)
	if h.Status != "starting" {
		t.Errorf("/livez status while starting: %q", h.Status)
	}

	b.waitReady()
	b.must("GET", "/api/health", 200, &h)
	if active, total := h.agents(); h.Status != "ok" || active != 2 || total != 2 || h.DatabaseStatus != "connected" {
		t.Fatalf("health when ready: %+v (agents %d/%d)", h, active, total)
	}
	first := h
	b.must("GET", "/readyz", 200, nil)
	b.must("GET", "/livez", 200, nil)

	// Uptime increases (whole seconds, counted from startup).
	eventually(t, 10*time.Second, "uptime to increase", func() bool {
		b.must("GET", "/api/health", 200, &h)
		return h.Uptime > first.Uptime
	})
	if !h.StartedAt.Equal(first.StartedAt) || !h.Timestamp.After(first.Timestamp) || h.InstanceID != first.InstanceID {
		t.Errorf("health moved: %+v then %+v", first, h)
	}

	// The agent counts follow POST and DELETE.
	var a AgentInfo
	b.must("POST", "/api/agents", 201, &a)
	b.must("GET", "/api/health", 200, &h)
	if active, total := h.agents(); active != 3 || total != 3 {
		t.Fatalf("after POST: agents %d/%d; want 3/3", active, total)
	}
	b.must("DELETE", "/api/agents/"+a.ID, 200, &a)
	if a.Status != AgentStopped {
		t.Fatalf("DELETE answered %+v", a)
	}
	b.must("DELETE", "/api/agents/agent-1", 200, nil)
	b.must("GET", "/api/health", 200, &h)
	if active, total := h.agents(); active != 1 || total != 3 {
		t.Fatalf("after 2 DELETEs: agents %d/%d; want 1/3", active, total)
	}
	b.must("DELETE", "/api/agents/agent-404", 404, nil)
	var list agentList
	b.must("GET", "/api/agents", 200, &list)
	if list.Active != 1 || list.Total != 3 {
		t.Fatalf("GET /api/agents: %+v", list)
	}

	b.signal(syscall.SIGTERM)
	if code := b.waitExit(exitTimeout); code != 0 {
		t.Fatalf("exit code %d; want 0", code)
	}
}

// The backend's stderr is a pipe whose reader is gone before it starts
// (`backend 2>&1 | true`). Nothing is logged before GracefulShutdown.Start
// notifies SIGPIPE, so the backend does not die of it: it starts, serves,
// and on SIGTERM runs its hooks, removes its PID file and exits 0.
func TestE2EStderrClosedFromTheStart(t *testing.T) {
	t.Parallel()
	dir, port := t.TempDir(), freePort(t)
	pidfile := filepath.Join(dir, "backend.pid")
	cmd := exec.Command(backendBinary(t), "-pidfile", pidfile, "-addr", "127.0.0.1:"+strconv.Itoa(port), "-agents", "0")
	cmd.Env = cleanEnv()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close() // the reader is gone before the first line
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	b := &backend{t: t, port: port}
	deadline := time.Now().Add(readyTimeout)
	for {
		var h map[string]any
		if code, err := b.call("GET", "/api/health", &h); err == nil && code == 200 {
			break
		}
		select {
		case <-exited:
			t.Fatalf("the backend exited before it was ready with its stderr reader gone: %v", cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready within %v", readyTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(exitTimeout):
		t.Fatalf("still running %v after SIGTERM", exitTimeout)
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit %v after SIGTERM with its stderr closed from the start; want 0", cmd.ProcessState)
	}
	assertGone(t, pidfile)
}
