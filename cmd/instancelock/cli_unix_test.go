//go:build unix

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock"
)

// startCLI returns the command, to be run in a new session away from any
// terminal of the test run, so that signal forwarding does not depend on
// where the tests run.
func startCLI(args ...string) *exec.Cmd {
	cmd := cliCmd(args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	return cmd
}

// holdWithRun starts "instancelock run -pidfile path -- sh -c script" (the
// script must print "ready" once it runs) and waits until it runs. Its
// standard error may be read once it has exited.
func holdWithRun(t *testing.T, path, script string) (*proc, *bytes.Buffer) {
	t.Helper()
	cmd := startCLI("run", "-pidfile", path, "--", "sh", "-c", script)
	stderr := new(bytes.Buffer)
	cmd.Stderr = stderr
	p := start(t, cmd, true)
	p.out.expect(t, "ready")
	return p, stderr
}

// sleeper is a script that says it is ready, then sleeps until signalled.
const sleeper = `echo ready; while :; do sleep 0.02; done`

// writeLock writes a PID file by hand, as a process that does not hold the
// kernel lock would have left it.
func writeLock(t *testing.T, path string, pl instancelock.ProcessLock) {
	t.Helper()
	data, err := pl.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

// deadPID returns the PID of a process that has exited.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

// strangerProcess starts a process that has nothing to do with any lock and
// returns it; it runs until the test ends.
func strangerProcess(t *testing.T) *proc {
	t.Helper()
	return start(t, exec.Command("sleep", "60"), false)
}

func myHost(t *testing.T) string {
	t.Helper()
	h, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func statusJSON(t *testing.T, path string) (map[string]any, int) {
	t.Helper()
	r := runCLI(t, "status", "-json", path)
	var m map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil {
		t.Fatalf("status -json: %v: %q (stderr %q)", err, r.stdout, r.stderr)
	}
	return m, r.code
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return !errors.Is(err, fs.ErrNotExist)
}

// TestRunSixteenAtOnce: of 16 runs started together, exactly one runs the
// command; the 15 others exit with the conflict code and name the winner,
// the wrapper whose PID is in the file.
func TestRunSixteenAtOnce(t *testing.T) {
	dir := t.TempDir()
	pidfile := filepath.Join(dir, "job.pid")
	ran := filepath.Join(dir, "ran")
	release := filepath.Join(dir, "release")
	script := `echo "$$" >> "$1"; while [ ! -e "$2" ]; do sleep 0.02; done`

	const n = 16
	cmds := make([]*exec.Cmd, n)
	stderrs := make([]*bytes.Buffer, n)
	for i := range cmds {
		cmds[i] = startCLI("run", "-pidfile", pidfile, "-conflict-exit-code", "75", "--", "sh", "-c", script, "sh", ran, release)
		stderrs[i] = new(bytes.Buffer)
		cmds[i].Stderr = stderrs[i]
	}
	var ready, wg sync.WaitGroup
	var mu sync.Mutex
	var procs []*os.Process // started, for the cleanup
	pids := make([]int, n)
	gate := make(chan struct{})
	type exit struct{ i, code int }
	exits := make(chan exit, n)
	for i, cmd := range cmds {
		ready.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ready.Done()
			<-gate
			if err := cmd.Start(); err != nil {
				t.Error(err)
				exits <- exit{i, -1}
				return
			}
			mu.Lock()
			procs = append(procs, cmd.Process)
			pids[i] = cmd.Process.Pid
			mu.Unlock()
			cmd.Wait()
			exits <- exit{i, exitStatus(cmd.ProcessState)}
		}()
	}
	ready.Wait()
	close(gate)
	t.Cleanup(func() {
		mu.Lock()
		for _, p := range procs {
			p.Kill()
		}
		mu.Unlock()
		wg.Wait()
	})

	done := map[int]bool{}
	for range n - 1 {
		select {
		case e := <-exits:
			if e.code != 75 {
				t.Errorf("run %d: exit %d, want the conflict code 75; stderr: %s", e.i, e.code, stderrs[e.i])
			}
			done[e.i] = true
		case <-time.After(20 * time.Second):
			t.Fatalf("only %d of %d runs gave up within 20s", len(done), n-1)
		}
	}
	winner := -1
	for i := range cmds {
		if !done[i] {
			winner = i
		}
	}
	mu.Lock()
	wpid := pids[winner]
	mu.Unlock()
	for i := range done {
		msg := stderrs[i].String()
		if !strings.Contains(msg, fmt.Sprintf("pid %d,", wpid)) || strings.Count(msg, "\n") != 1 {
			t.Errorf("run %d does not name the holder pid %d on one line: %q", i, wpid, msg)
		}
	}
	m, code := statusJSON(t, pidfile)
	if code != 0 || m["pid"] != float64(wpid) || m["alive"] != true || m["stale"] != false || m["status"] != "running" {
		t.Errorf("status of the winner: exit %d, %v; want running pid %d", code, m, wpid)
	}

	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-exits:
		if e.i != winner || e.code != 0 {
			t.Errorf("run %d exited %d; want the winner %d to exit 0", e.i, e.code, winner)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the winner did not finish")
	}
	data, err := os.ReadFile(ran)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(data), "\n"); got != 1 {
		t.Errorf("the command ran %d times, want once:\n%s", got, data)
	}
	if exists(pidfile) {
		t.Error("the PID file is still there after the winner exited")
	}
}

// TestRunExitStatus: run exits with the child's status, 128+N when signal N
// killed it, and removes the PID file.
func TestRunExitStatus(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "job.pid")
	for script, want := range map[string]int{
		"true":          0,
		"exit 7":        7,
		"kill -TERM $$": 128 + int(syscall.SIGTERM),
		"kill -KILL $$": 128 + int(syscall.SIGKILL),
	} {
		r := runCLI(t, "run", "-pidfile", pidfile, "--", "sh", "-c", script)
		if r.code != want || r.stderr != "" {
			t.Errorf("%q: exit %d, want %d; stderr %q", script, r.code, want, r.stderr)
		}
		if exists(pidfile) {
			t.Errorf("%q: the PID file is left behind", script)
		}
	}
	// Standard input and output are the command's.
	cmd := cliCmd("run", "-pidfile", pidfile, "--", "sh", "-c", `read x; echo "got $x"; echo oops >&2`)
	cmd.Stdin = strings.NewReader("hello\n")
	r := runCmd(t, cmd)
	if r.code != 0 || r.stdout != "got hello\n" || r.stderr != "oops\n" {
		t.Errorf("stdio: %+v", r)
	}
}

// TestRunPIDFileNamesTheWrapper: the PID file names the instancelock
// process, not the command.
func TestRunPIDFileNamesTheWrapper(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "job.pid")
	cmd := cliCmd("run", "-pidfile", pidfile, "--", "sh", "-c", `cat "$1"; echo "child $$"`, "sh", pidfile)
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	content, child, _ := strings.Cut(out.String(), "child ")
	pl, err := instancelock.ParseProcessLock([]byte(content))
	if err != nil {
		t.Fatalf("the command saw %q: %v", content, err)
	}
	if pl.PID != cmd.Process.Pid || strings.TrimSpace(child) == strconv.Itoa(pl.PID) {
		t.Errorf("the PID file names pid %d; the wrapper is %d, the command %s", pl.PID, cmd.Process.Pid, child)
	}
}

// TestRunForwardsSignals: the signals a wrapper gets reach the command,
// whose exit status becomes the wrapper's.
func TestRunForwardsSignals(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2} {
		name := strings.TrimPrefix(signalName(sig), "SIG")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			pidfile := filepath.Join(t.TempDir(), "job.pid")
			p, _ := holdWithRun(t, pidfile, fmt.Sprintf(`trap 'echo got-%s; exit 3' %s; %s`, name, name, sleeper))
			if err := p.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			p.out.expect(t, "got-"+name)
			if code := p.wait(t); code != 3 {
				t.Errorf("wrapper exit %d, want the command's 3", code)
			}
			if exists(pidfile) {
				t.Error("the PID file is left behind")
			}
		})
	}
	t.Run("killed", func(t *testing.T) {
		t.Parallel()
		pidfile := filepath.Join(t.TempDir(), "job.pid")
		p, _ := holdWithRun(t, pidfile, sleeper)
		p.cmd.Process.Signal(syscall.SIGTERM)
		if code := p.wait(t); code != 128+int(syscall.SIGTERM) {
			t.Errorf("wrapper exit %d, want 143 (the command died of SIGTERM)", code)
		}
	})
}

// TestRunConflict: a held lock is reported with the holder and the conflict
// code; -wait waits for it; a signal ends the wait.
func TestRunConflict(t *testing.T) {
	dir := t.TempDir()
	pidfile := filepath.Join(dir, "job.pid")
	holder, _ := holdWithRun(t, pidfile, sleeper)
	hpid := holder.pid()

	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"run", "-pidfile", pidfile, "--", "touch", filepath.Join(dir, "ran")}, 1, fmt.Sprintf("is held by pid %d, started ", hpid)},
		{[]string{"run", "-pidfile", pidfile, "-conflict-exit-code", "0", "--", "touch", filepath.Join(dir, "ran")}, 0, fmt.Sprintf("pid %d", hpid)},
		{[]string{"run", "-pidfile", pidfile, "-wait", "100ms", "-conflict-exit-code", "9", "--", "touch", filepath.Join(dir, "ran")}, 9, fmt.Sprintf("is still held after 100ms by pid %d", hpid)},
	} {
		r := runCLI(t, c.args...)
		if r.code != c.code || !strings.Contains(r.stderr, c.msg) {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", c.args, r.code, r.stderr, c.code, c.msg)
		}
		checkOneLineError(t, r, c.args)
	}
	if exists(filepath.Join(dir, "ran")) {
		t.Error("a command ran while the lock was held")
	}

	// A waiter runs its command once the holder is gone, under its own
	// PID.
	waiter := start(t, startCLI("run", "-pidfile", pidfile, "-wait", "1m", "--", "cat", pidfile), true)
	holder.cmd.Process.Signal(syscall.SIGTERM)
	if code := holder.wait(t); code != 128+int(syscall.SIGTERM) {
		t.Errorf("holder exit %d, want 143", code)
	}
	pl, err := instancelock.ParseProcessLock([]byte(waiter.out.expect(t, `"pid"`)))
	if err != nil || pl.PID != waiter.pid() {
		t.Errorf("the waiter's command saw %+v, %v; want the waiter's pid %d", pl, err, waiter.pid())
	}
	if code := waiter.wait(t); code != 0 {
		t.Errorf("waiter exit %d", code)
	}
}

// TestRunLockLost: when the PID file is removed under a running command,
// the wrapper, which still holds the lock, puts it back and the command
// runs on; when another process holds the file now at the path, the lock
// is lost and the command gets SIGTERM.
func TestRunLockLost(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "job.pid")
	p, stderr := holdWithRun(t, pidfile, `trap 'echo got-TERM; exit 4' TERM; `+sleeper)
	if err := os.Remove(pidfile); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		if data, err := os.ReadFile(pidfile); err == nil {
			if pl, err := instancelock.ParseProcessLock(data); err == nil && pl.PID == p.pid() {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the removed PID file was not re-published")
		}
		time.Sleep(time.Millisecond)
	}
	// Another process's locked file is renamed over it: lost.
	other, err := os.OpenFile(pidfile+".other", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := syscall.Flock(int(other.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(pidfile+".other", pidfile); err != nil {
		t.Fatal(err)
	}
	p.out.expect(t, "got-TERM")
	if code := p.wait(t); code != 4 {
		t.Errorf("exit %d, want the command's 4", code)
	}
	if !strings.Contains(stderr.String(), "lock lost") || !strings.Contains(stderr.String(), "sending SIGTERM to sh") {
		t.Errorf("the wrapper did not say why: %q", stderr.String())
	}
}

// TestRunCommandErrors: a missing command is 127, one that cannot be
// executed 126, and neither takes or leaves the lock.
func TestRunCommandErrors(t *testing.T) {
	dir := t.TempDir()
	pidfile := filepath.Join(dir, "job.pid")
	notExec := filepath.Join(dir, "script.sh")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\necho hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		command string
		code    int
	}{
		{filepath.Join(dir, "missing"), 127},
		{"no-such-command-instancelock-test", 127},
		{notExec, 126},
		{dir, 126},
	} {
		args := []string{"run", "-pidfile", pidfile, "--", c.command}
		r := runCLI(t, args...)
		if r.code != c.code {
			t.Errorf("%s: exit %d, want %d; stderr %q", c.command, r.code, c.code, r.stderr)
		}
		checkOneLineError(t, r, args)
		if exists(pidfile) {
			t.Errorf("%s: the PID file is left behind", c.command)
		}
	}

	// An empty file (a flock(1) lock file, say) is taken over and removed.
	if err := os.WriteFile(pidfile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := runCLI(t, "run", "-pidfile", pidfile, "--", "true"); r.code != 0 || exists(pidfile) {
		t.Errorf("empty file: %+v, left behind: %v", r, exists(pidfile))
	}
}

// TestRunDefaultPIDFile: without -pidfile, the lock is per command line,
// under the user's cache directory.
func TestRunDefaultPIDFile(t *testing.T) {
	home := t.TempDir()
	env := []string{"HOME=" + home, "XDG_CACHE_HOME="}
	cli := func(args ...string) *exec.Cmd {
		cmd := startCLI(args...)
		cmd.Env = append(cmd.Env, env...)
		return cmd
	}
	holder := start(t, cli("run", "--", "sh", "-c", sleeper), true)
	holder.out.expect(t, "ready")
	files, _ := filepath.Glob(filepath.Join(home, ".cache", "instancelock", "sh-*.pid"))
	if len(files) != 1 {
		t.Fatalf("PID files under the cache directory: %q", files)
	}
	if r := runCmd(t, cli("run", "--", "sh", "-c", sleeper)); r.code != 1 || !strings.Contains(r.stderr, files[0]) {
		t.Errorf("same command line: %+v; want conflict naming %s", r, files[0])
	}
	if r := runCmd(t, cli("run", "--", "sh", "-c", "exit 5")); r.code != 5 {
		t.Errorf("another command line: %+v; want it to run", r)
	}
	if r := runCLI(t, "stop", files[0]); r.code != 0 {
		t.Errorf("stop: %+v", r)
	}
	holder.wait(t)
}

// TestStatusExitCodes: each LSB code in the situation it names.
func TestStatusExitCodes(t *testing.T) {
	dir := t.TempDir()
	host := myHost(t)
	now := time.Now().UTC().Truncate(time.Millisecond)

	running := filepath.Join(dir, "running.pid")
	holder, _ := holdWithRun(t, running, sleeper)
	hpid := holder.pid()

	stale := filepath.Join(dir, "stale.pid")
	dead := deadPID(t)
	writeLock(t, stale, instancelock.ProcessLock{PID: dead, StartedAt: now.Add(-time.Hour), Hostname: host, Port: 8080, InstanceID: "dead-one"})

	reused := filepath.Join(dir, "reused.pid")
	stranger := strangerProcess(t)
	writeLock(t, reused, instancelock.ProcessLock{PID: stranger.pid(), StartedAt: now, Hostname: host, StartToken: "linux:not-this-process:1"})

	other := filepath.Join(dir, "other.pid")
	writeLock(t, other, instancelock.ProcessLock{PID: 4242, StartedAt: now, Hostname: "some-other-host.example"})

	symlink := filepath.Join(dir, "link.pid")
	if err := os.Symlink(running, symlink); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		path   string
		code   int
		stdout []string
		stderr string
	}{
		{running, 0, []string{"running, pid " + strconv.Itoa(hpid), "process:     is alive", "lock:        held", "uptime"}, ""},
		{stale, 1, []string{fmt.Sprintf("stale, pid %d named in the file does not hold the lock, which is free", dead), "port:        8080", "instance id: dead-one", "uptime 1h0m", "lock:        free"}, ""},
		{reused, 1, []string{fmt.Sprintf("stale, pid %d named in the file does not hold the lock, which is free", stranger.pid()), "lock:        free"}, ""},
		{filepath.Join(dir, "absent.pid"), 3, []string{"not running (no PID file)"}, ""},
		{other, 4, []string{"pid:         4242", "host:        some-other-host.example"}, "written on host some-other-host.example"},
		{symlink, 4, nil, "symbolic link"},
	} {
		r := runCLI(t, "status", c.path)
		if r.code != c.code {
			t.Errorf("%s: exit %d, want %d; stdout %q stderr %q", c.path, r.code, c.code, r.stdout, r.stderr)
		}
		for _, s := range c.stdout {
			if !strings.Contains(r.stdout, s) {
				t.Errorf("%s: stdout lacks %q:\n%s", c.path, s, r.stdout)
			}
		}
		if c.stderr == "" && r.stderr != "" {
			t.Errorf("%s: stderr %q", c.path, r.stderr)
		}
		if c.stderr != "" {
			checkOneLineError(t, r, []string{"status", c.path})
			if !strings.Contains(r.stderr, c.stderr) {
				t.Errorf("%s: stderr %q lacks %q", c.path, r.stderr, c.stderr)
			}
		}
	}

	// -json, before or after the path.
	for _, c := range []struct {
		path  string
		code  int
		want  map[string]any
		wants []string // keys that must be present
	}{
		{running, 0, map[string]any{"status": "running", "pid": float64(hpid), "alive": true, "stale": false}, []string{"startedAt", "instanceId", "hostname", "startToken", "goVersion", "uptimeSeconds"}},
		{stale, 1, map[string]any{"status": "stale", "pid": float64(dead), "alive": false, "stale": true, "port": float64(8080), "instanceId": "dead-one"}, []string{"startedAt", "uptimeSeconds"}},
		{reused, 1, map[string]any{"status": "stale", "alive": false, "stale": true}, nil},
		{filepath.Join(dir, "absent.pid"), 3, map[string]any{"status": "not running", "alive": false, "stale": false}, nil},
		{other, 4, map[string]any{"status": "unknown", "pid": float64(4242), "hostname": "some-other-host.example"}, []string{"error"}},
	} {
		m, code := statusJSON(t, c.path)
		if code != c.code {
			t.Errorf("-json %s: exit %d, want %d", c.path, code, c.code)
		}
		for k, v := range c.want {
			if m[k] != v {
				t.Errorf("-json %s: %s = %v, want %v (%v)", c.path, k, m[k], v, m)
			}
		}
		for _, k := range c.wants {
			if _, ok := m[k]; !ok {
				t.Errorf("-json %s: no %s (%v)", c.path, k, m)
			}
		}
	}
	r := runCLI(t, "status", running, "-json")
	if r.code != 0 || !strings.Contains(r.stdout, `"status": "running"`) {
		t.Errorf("status PATH -json: %+v", r)
	}
	r = runCLI(t, "status", "--", "-json")
	if r.code != 3 || !strings.Contains(r.stdout, "-json: not running") {
		t.Errorf("status -- -json: %+v; want the file named -json", r)
	}
	if !exists(stale) || !exists(reused) || !exists(other) {
		t.Error("status changed a file")
	}
	if !stranger.running() {
		t.Errorf("the stranger was harmed: exit %d", stranger.code)
	}
}

// TestStopGraceful: stop sends SIGTERM to the wrapper, which passes it on;
// the lock is released and the file removed.
func TestStopGraceful(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "job.pid")
	holder, _ := holdWithRun(t, pidfile, sleeper)
	r := runCLI(t, "stop", pidfile)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("stop: %+v", r)
	}
	for _, want := range []string{fmt.Sprintf("sent SIGTERM to pid %d", holder.pid()), fmt.Sprintf("pid %d stopped after", holder.pid())} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stop said %q; want %q", r.stdout, want)
		}
	}
	if code := holder.wait(t); code != 128+int(syscall.SIGTERM) {
		t.Errorf("holder exit %d, want 143", code)
	}
	if exists(pidfile) {
		t.Error("the PID file is left behind")
	}
	// Nothing to stop is success.
	r = runCLI(t, "stop", pidfile)
	if r.code != 0 || !strings.Contains(r.stdout, "not running (no PID file)") {
		t.Errorf("second stop: %+v", r)
	}
}

// TestStopSignalFlag: -signal chooses the first signal.
func TestStopSignalFlag(t *testing.T) {
	for _, flagValue := range []string{"hup", "SIGHUP", strconv.Itoa(int(syscall.SIGHUP))} {
		t.Run(flagValue, func(t *testing.T) {
			t.Parallel()
			pidfile := filepath.Join(t.TempDir(), "job.pid")
			holder, _ := holdWithRun(t, pidfile, `trap 'echo got-HUP; exit 0' HUP; `+sleeper)
			r := runCLI(t, "stop", "-signal", flagValue, pidfile)
			if r.code != 0 || !strings.Contains(r.stdout, "sent SIGHUP") {
				t.Errorf("stop: %+v", r)
			}
			holder.out.expect(t, "got-HUP")
			if code := holder.wait(t); code != 0 {
				t.Errorf("holder exit %d", code)
			}
		})
	}
}

// TestStopEscalatesToKill: a holder that ignores SIGTERM gets SIGKILL after
// the timeout, and the file it leaves is removed.
func TestStopEscalatesToKill(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "job.pid")
	cmd := helperCmd("hold-ignoring-term", "INSTANCELOCK_CLI_PATH="+pidfile)
	cmd.Stderr = os.Stderr
	if _, err := cmd.StdinPipe(); err != nil { // closed when the test ends
		t.Fatal(err)
	}
	helper := start(t, cmd, true)
	helper.out.expect(t, "locked")

	r := runCLI(t, "stop", "-timeout", "300ms", pidfile)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("stop: %+v", r)
	}
	for _, want := range []string{
		fmt.Sprintf("sent SIGTERM to pid %d", helper.pid()),
		fmt.Sprintf("pid %d still holds %s after 300ms: sending SIGKILL", helper.pid(), pidfile),
		fmt.Sprintf("sent SIGKILL to pid %d", helper.pid()),
		"stopped after",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stop said:\n%s\nwant %q", r.stdout, want)
		}
	}
	if code := helper.wait(t); code != 128+int(syscall.SIGKILL) {
		t.Errorf("helper exit %d, want death by SIGKILL", code)
	}
	if exists(pidfile) {
		t.Error("the killed holder's PID file was not removed")
	}
}

// TestStopStale: a file whose process died is removed, and that is success.
func TestStopStale(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "job.pid")
	dead := deadPID(t)
	writeLock(t, pidfile, instancelock.ProcessLock{PID: dead, StartedAt: time.Now(), Hostname: myHost(t)})
	r := runCLI(t, "stop", pidfile)
	if r.code != 0 || r.stderr != "" || !strings.Contains(r.stdout, fmt.Sprintf("removed the stale PID file (pid %d named in it does not hold the lock; it was not signalled)", dead)) {
		t.Errorf("stop: %+v", r)
	}
	if exists(pidfile) {
		t.Error("the stale file is still there")
	}
}

// TestStopRefusesNonHolder: a PID file naming a live process that does not
// hold the lock (its PID was reused) is stale: stop leaves that process
// alone, says so, and removes the file.
func TestStopRefusesNonHolder(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "job.pid")
	stranger := strangerProcess(t)
	spid := stranger.pid()
	writeLock(t, pidfile, instancelock.ProcessLock{PID: spid, StartedAt: time.Now(), Hostname: myHost(t), StartToken: "linux:not-this-process:1"})
	r := runCLI(t, "stop", "-timeout", "0", pidfile)
	if r.code != 0 || r.stderr != "" {
		t.Errorf("stop: %+v", r)
	}
	if !strings.Contains(r.stdout, fmt.Sprintf("removed the stale PID file (pid %d named in it does not hold the lock; it was not signalled)", spid)) {
		t.Errorf("stop did not say it left pid %d alone: %q", spid, r.stdout)
	}
	if strings.Contains(r.stdout, "sent") {
		t.Errorf("stop says it sent a signal: %q", r.stdout)
	}
	if exists(pidfile) {
		t.Error("the stale file is still there")
	}
	// The stranger is unharmed: still running, nothing delivered.
	time.Sleep(50 * time.Millisecond)
	if !stranger.running() {
		t.Fatalf("the stranger is gone: exit %d", stranger.code)
	}
	stranger.cmd.Process.Kill()
	if code := stranger.wait(t); code != 128+int(syscall.SIGKILL) {
		t.Errorf("the stranger ended with %d before the test killed it", code)
	}
}

// TestStopOtherHost: a lock written on another host is not touched.
func TestStopOtherHost(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "job.pid")
	stranger := strangerProcess(t)
	writeLock(t, pidfile, instancelock.ProcessLock{PID: stranger.pid(), StartedAt: time.Now(), Hostname: "some-other-host.example"})
	r := runCLI(t, "stop", pidfile)
	if r.code != 1 || !strings.Contains(r.stderr, "written on host some-other-host.example") {
		t.Errorf("stop: %+v", r)
	}
	checkOneLineError(t, r, []string{"stop", pidfile})
	if !exists(pidfile) {
		t.Error("another host's PID file was removed")
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]syscall.Signal{
		"TERM": syscall.SIGTERM, "term": syscall.SIGTERM, "SIGTERM": syscall.SIGTERM, "sigint": syscall.SIGINT,
		"HUP": syscall.SIGHUP, "KILL": syscall.SIGKILL, "QUIT": syscall.SIGQUIT, "USR1": syscall.SIGUSR1,
		"SIGUSR2": syscall.SIGUSR2, "15": syscall.SIGTERM, " 9 ": syscall.SIGKILL, "64": syscall.Signal(64),
	} {
		got, err := parseSignal(in)
		if err != nil || got != want {
			t.Errorf("parseSignal(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "FOO", "SIG", "0", "-1", "65", "1.5", "TERM2"} {
		if got, err := parseSignal(in); err == nil {
			t.Errorf("parseSignal(%q) = %v, want an error", in, got)
		}
	}
	if got := signalName(syscall.SIGTERM); got != "SIGTERM" {
		t.Errorf("signalName(SIGTERM) = %q", got)
	}
}

// TestStopNeverSignalsAnUnprovenPID: the input. A bare PID naming a
// live process that does not hold the lock: stop signals nothing, says so
// and fails (starts refuse the file), status does not say "held".
func TestStopNeverSignalsAnUnprovenPID(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "f.pid")
	stranger := strangerProcess(t)
	spid := stranger.pid()
	if err := os.WriteFile(pidfile, []byte(strconv.Itoa(spid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, "stop", "-timeout", "300ms", pidfile)
	if strings.Contains(r.stdout, "sent") {
		t.Errorf("stop says it sent a signal: %+v", r)
	}
	if r.code != exitFail || !strings.Contains(r.stderr, fmt.Sprintf("pid %d named in %s is alive but does not hold the lock", spid, pidfile)) {
		t.Errorf("stop did not say why it did nothing: %+v", r)
	}
	st := runCLI(t, "status", pidfile)
	if st.code == 0 || strings.Contains(st.stdout, "held") || !strings.Contains(st.stderr+st.stdout, "alive but does not hold the lock") {
		t.Errorf("status: %+v", st)
	}
	time.Sleep(50 * time.Millisecond)
	if !stranger.running() {
		t.Fatalf("the stranger was signalled: exit %d", stranger.code)
	}
}

// TestStopAfterTheFileWasRemoved: on Linux the holder is found (and
// proven) by its lock's socket while its PID file is gone.
func TestStopAfterTheFileWasRemoved(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the lock's socket is Linux's")
	}
	pidfile := filepath.Join(t.TempDir(), "job.pid")
	p, _ := holdWithRun(t, pidfile, sleeper)
	if err := os.Remove(pidfile); err != nil {
		t.Fatal(err)
	}
	st := runCLI(t, "status", pidfile)
	if st.code != 0 || !strings.Contains(st.stdout, fmt.Sprintf("pid %d", p.pid())) {
		t.Errorf("status: %+v", st)
	}
	r := runCLI(t, "stop", pidfile)
	if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("sent SIGTERM to pid %d", p.pid())) {
		t.Errorf("stop: %+v", r)
	}
	p.wait(t)
}
