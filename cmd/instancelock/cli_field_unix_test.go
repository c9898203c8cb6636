//go:build unix

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock"
)

func init() {
	// A stranger to the lock that says its start token (its own view of
	// itself, through instancelock.Current), then waits to be killed.
	helpers["say-start-token"] = func() int {
		pl, err := instancelock.Current(0)
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		fmt.Println("token", pl.StartToken)
		time.Sleep(time.Hour)
		return 0
	}
}

// What a crash or a power loss leaves of a PID file is stale: status says
// 1, run takes it over, stop removes it.
func TestRemnantsAreStale(t *testing.T) {
	for name, content := range map[string]string{
		"97 NUL bytes":   strings.Repeat("\x00", 97),
		"a lone newline": "\n",
		"empty":          "",
		"cut-off JSON":   `{"pid":123,"startedAt":"2026-01-01T00:` + "\x00\x00\x00",
		"cut-off legacy": "12\x00\x00",
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "job.pid")
			write := func() {
				if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			write()
			r := runCLI(t, "status", path)
			if r.code != statusStale || !strings.Contains(r.stdout, "stale, it holds what a crash left of a PID file") || r.stderr != "" {
				t.Errorf("status: %+v", r)
			}
			if m, code := statusJSON(t, path); code != statusStale || m["status"] != "stale" || m["stale"] != true {
				t.Errorf("status -json: %d %v", code, m)
			}
			r = runCLI(t, "run", "-pidfile", path, "--", "sh", "-c", "cat "+path)
			if r.code != 0 || !strings.Contains(r.stdout, `"pid":`) {
				t.Errorf("run did not take the remnant over: %+v", r)
			}
			if exists(path) {
				t.Error("run left its PID file behind")
			}
			write()
			r = runCLI(t, "stop", path)
			if content == "" {
				// What a release in place leaves: kept.
				if r.code != 0 || !exists(path) || !strings.Contains(r.stdout, "not running") {
					t.Errorf("stop of an empty file: %+v", r)
				}
			} else if r.code != 0 || exists(path) {
				t.Errorf("stop did not remove the remnant: %+v", r)
			}
		})
	}
}

// A file that is not a PID file is someone's: status says 4, run and stop
// refuse, and the file is left byte for byte as it was.
func TestForeignFilesAreRefused(t *testing.T) {
	for name, content := range map[string]string{
		"notes":     "notes\n",
		"SQLite":    "SQLite format 3\x00\x10\x00\x02\x02\x00@  " + strings.Repeat("\x00", 200),
		"JSON":      `{"pid":123,"startedAt":"2026-01-01T00:00:00Z"}]]]`,
		"a counter": "0\n", // no PID begins with 0: not a cut-off PID
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "notes.txt")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			r := runCLI(t, "status", path)
			if r.code != statusUnknown || !strings.Contains(r.stderr, "not a PID file") {
				t.Errorf("status: %+v", r)
			}
			checkOneLineError(t, r, []string{"status", path})
			r = runCLI(t, "run", "-pidfile", path, "--", "echo", "ran")
			if r.code != exitRunFailed || strings.Contains(r.stdout, "ran") || !strings.Contains(r.stderr, "not a PID file") || !strings.Contains(r.stderr, "choose another PID file path") {
				t.Errorf("run: %+v", r)
			}
			checkOneLineError(t, r, []string{"run", path})
			r = runCLI(t, "stop", path)
			if r.code != exitFail || !strings.Contains(r.stderr, "nothing done") {
				t.Errorf("stop: %+v", r)
			}
			data, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(data, []byte(content)) {
				t.Errorf("the file was changed: %q, %v", data, err)
			}
			if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("the file's mode was changed: %v, %v", fi.Mode(), err)
			}
			entries, _ := os.ReadDir(filepath.Dir(path))
			if len(entries) != 1 {
				t.Errorf("something was created next to it: %v", entries)
			}
		})
	}
}

// A holder whose hostname differs from the operator's (renamed host, or a
// UTS namespace of its own) is still on this machine: status, stop and the
// takeover after a crash work, because the machine is known by its PID
// space, not its name.
func TestHostnameChangeKeepsTheMachine(t *testing.T) {
	if os.Getenv("CI") != "true" {
		if os.Geteuid() != 0 {
			t.Skip("unshare -u needs root")
		}
		if _, err := exec.LookPath("unshare"); err != nil {
			t.Skip("no unshare(1) on this machine")
		}
	}
	path := filepath.Join(t.TempDir(), "job.pid")
	holdRenamed := func() *proc {
		cli := cliCmd("run", "-pidfile", path, "--", "sh", "-c", sleeper)
		cmd := exec.Command("unshare", append([]string{"-u", "sh", "-c", `hostname renamed-host-instancelock && exec "$0" "$@"`, cli.Path}, cli.Args[1:]...)...)
		cmd.Env = cli.Env
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		p := start(t, cmd, true)
		p.out.expect(t, "ready")
		return p
	}
	p := holdRenamed()
	h, err := instancelock.ParseProcessLock(mustRead(t, path))
	if err != nil || h.Hostname != "renamed-host-instancelock" || h.PID != p.pid() {
		t.Fatalf("the holder's file: %+v, %v", h, err)
	}
	if r := runCLI(t, "status", path); r.code != statusRunning || !strings.Contains(r.stdout, "lock:        held") {
		t.Errorf("status of a renamed host's holder: %+v", r)
	}
	if r := runCLI(t, "stop", "-timeout", "10s", path); r.code != exitOK {
		t.Errorf("stop of a renamed host's holder: %+v", r)
	}
	p.wait(t)

	// After a crash: stale, and taken over.
	p = holdRenamed()
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.wait(t)
	eventually(t, "the command dies with the wrapper", func() bool {
		r := runCLI(t, "status", path)
		return r.code == statusStale
	})
	if r := runCLI(t, "run", "-pidfile", path, "--", "true"); r.code != 0 {
		t.Errorf("takeover of a renamed host's stale file: %+v", r)
	}
	p = holdRenamed()
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.wait(t)
	eventually(t, "stop removes the stale file", func() bool {
		r := runCLI(t, "stop", path)
		return r.code == exitOK && !exists(path)
	})
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// needRoot skips a test that runs commands as the user nobody unless the
// test runs as root; under CI=true it fails instead.
func needRoot(t *testing.T) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root to run the command as the user nobody"
	} else if _, err := exec.LookPath("setpriv"); err != nil {
		why = "needs setpriv(1)"
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why)
}

// publicDir is a new directory every user can enter, removed at the end.
func publicDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "instancelock-cli-layout-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// asNobody turns a command made by cliCmd into one run by the user nobody,
// from a copy of the test binary that nobody can execute (coverage
// counters are not collected for it).
func asNobody(t *testing.T, cli *exec.Cmd) *exec.Cmd {
	t.Helper()
	bin := filepath.Join(publicDir(t), "instancelock")
	data, err := os.ReadFile(cli.Path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", bin, "-test.run=^$")
	cmd.Env, cmd.WaitDelay = cli.Env, cli.WaitDelay
	return cmd
}

func permOf(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// Under umask 077, run creates the documented modes, and another user's
// status can read the file.
func TestRunUnderUmask077(t *testing.T) {
	needRoot(t)
	path := filepath.Join(publicDir(t), "new", "job.pid")
	cli := cliCmd("run", "-pidfile", path, "--", "sh", "-c", sleeper)
	cmd := exec.Command("sh", append([]string{"-c", `umask 077 && exec "$0" "$@"`, cli.Path}, cli.Args[1:]...)...)
	cmd.Env = cli.Env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	p := start(t, cmd, true)
	p.out.expect(t, "ready")
	if m := permOf(t, path); m != 0o644 {
		t.Errorf("file mode %v, want 0644", m)
	}
	if m := permOf(t, filepath.Dir(path)); m != 0o755 {
		t.Errorf("directory mode %v, want 0755", m)
	}
	r := runCmd(t, asNobody(t, cliCmd("status", path)))
	if r.code != statusRunning || !strings.Contains(r.stdout, "lock:        held") {
		t.Errorf("status as nobody: %+v", r)
	}
}

// The /run/app layout: a root-owned 0755 directory, the PID file prepared
// for the service user, who runs the job; status and stop work from root.
func TestRunInARootOwnedDirectory(t *testing.T) {
	needRoot(t)
	dir := filepath.Join(publicDir(t), "app")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "app.pid")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	job := asNobody(t, cliCmd("run", "-pidfile", path, "--", "sh", "-c", sleeper))
	job.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	p := start(t, job, true)
	p.out.expect(t, "ready")
	if r := runCLI(t, "status", path); r.code != statusRunning {
		t.Errorf("status: %+v", r)
	}
	if r := runCmd(t, asNobody(t, cliCmd("run", "-pidfile", path, "--", "echo", "second"))); r.code != 1 || strings.Contains(r.stdout, "second") {
		t.Errorf("a second run as the service user: %+v", r)
	}
	if r := runCLI(t, "stop", "-timeout", "10s", path); r.code != exitOK {
		t.Errorf("stop: %+v", r)
	}
	p.wait(t)
	if data, err := os.ReadFile(path); err != nil || len(data) != 0 {
		t.Errorf("released in place: want the file kept and emptied, got %q, %v", data, err)
	}
	if r := runCmd(t, asNobody(t, cliCmd("run", "-pidfile", path, "--", "true"))); r.code != 0 {
		t.Errorf("the next run: %+v", r)
	}
}

// TestFrontEndsAgree: status, stop, run and the library (TryLock) reach
// one verdict for a PID file that nothing locks but that names a live
// process (a stranger, never signalled): a bare PID from a tool that takes
// no lock makes starts refuse, so status says 4, stop fails and keeps the
// file, run refuses, each saying what to do; this package's JSON (written
// only under the lock) naming it, with its real start token or without
// one and an old startedAt, is stale: status 1, stop removes it, run and
// TryLock take it over.
func TestFrontEndsAgree(t *testing.T) {
	stranger := start(t, helperCmd("say-start-token"), true)
	spid := stranger.pid()
	token := strings.TrimPrefix(stranger.out.expect(t, "token "), "token ")
	if token == "" {
		t.Fatal("the stranger has no start token")
	}
	dir := t.TempDir()
	own, err := instancelock.Acquire(filepath.Join(dir, "own.pid"))
	if err != nil {
		t.Fatal(err)
	}
	me, _ := own.Info()
	own.Unlock()
	bare := strconv.Itoa(spid) + "\n"
	withToken := instancelock.ProcessLock{PID: spid, StartedAt: time.Now(), Hostname: me.Hostname, StartToken: token, PIDSpace: me.PIDSpace}
	old := instancelock.ProcessLock{PID: spid, StartedAt: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)}
	write := func(path string, pl *instancelock.ProcessLock) {
		t.Helper()
		if pl == nil {
			if err := os.WriteFile(path, []byte(bare), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		writeLock(t, path, *pl)
	}
	for _, c := range []struct {
		name  string
		pl    *instancelock.ProcessLock
		stale bool
	}{
		{"bare PID of a live process", nil, false},
		{"JSON with the live process's start token", &withToken, true},
		{"JSON without a token, written before the process started", &old, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "app.pid")
			write(path, c.pl)
			l, err := instancelock.New(path)
			if err != nil {
				t.Fatal(err)
			}
			err = l.TryLock()
			if c.stale != (err == nil) {
				t.Fatalf("TryLock: %v; stale %v", err, c.stale)
			}
			if err == nil {
				l.Unlock()
			} else {
				var are *instancelock.AlreadyRunningError
				if !errors.As(err, &are) || !are.Unlocked || strings.Contains(are.Help("app"), "The lock is held") {
					t.Errorf("TryLock: %v", err)
				}
			}
			write(path, c.pl)
			st := runCLI(t, "status", path)
			stop := runCLI(t, "stop", "-timeout", "0", path)
			stopKept := exists(path)
			write(path, c.pl)
			run := runCLI(t, "run", "-pidfile", path, "--", "echo", "ran")
			if c.stale {
				if st.code != statusStale || strings.Contains(st.stdout, "is alive") {
					t.Errorf("status: %+v", st)
				}
				if stop.code != exitOK || stopKept || strings.Contains(stop.stdout+stop.stderr, "is alive") {
					t.Errorf("stop: %+v (file kept: %v)", stop, stopKept)
				}
				if run.code != 0 || !strings.Contains(run.stdout, "ran") {
					t.Errorf("run: %+v", run)
				}
			} else {
				advice := fmt.Sprintf("pid %d named in %s is alive but does not hold the lock", spid, path)
				if st.code != statusUnknown || !strings.Contains(st.stderr, advice) || !strings.Contains(st.stderr, "stop it by its own means") {
					t.Errorf("status: %+v", st)
				}
				if stop.code != exitFail || !stopKept || !strings.Contains(stop.stderr, advice) || strings.Contains(stop.stdout, "sent") {
					t.Errorf("stop: %+v (file kept: %v)", stop, stopKept)
				}
				if run.code != 1 || strings.Contains(run.stdout, "ran") || !strings.Contains(run.stderr, advice) || strings.Contains(run.stderr, "is held by") {
					t.Errorf("run: %+v", run)
				}
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	if !stranger.running() {
		t.Fatalf("the stranger was signalled: exit %d", stranger.code)
	}
}
