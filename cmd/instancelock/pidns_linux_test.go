package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock"
	"github.com/ad5dec64/instancelock/internal/pidspace"
)

// The verdict on a PID file written in another PID namespace (a container)
// of this very boot: the kernel here holds its flock, so status reports
// what a start would do (running while it is held, stale once it is free)
// instead of "unknown", from the host and from inside a namespace alike;
// stop removes it when stale and signals nothing while it is held.

// needUnshare skips, outside CI, where PID namespaces cannot be made.
func needUnshare(t *testing.T) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("unshare -p needs root")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("no unshare(1) on this machine")
	}
}

// inNewPIDNamespace makes cmd (a run of the test binary) run as pid 1 of a
// new PID namespace with its own /proc, as in a container; the namespace,
// cmd with it, dies when the returned command (unshare) is killed.
func inNewPIDNamespace(cmd *exec.Cmd) *exec.Cmd {
	u := exec.Command("unshare", append([]string{"--fork", "--pid", "--mount-proc", "--kill-child", cmd.Path}, cmd.Args[1:]...)...)
	u.Env, u.Dir = cmd.Env, cmd.Dir
	u.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	return u
}

// TestStatusOfAContainersFile: a holder in a PID namespace of its own;
// status and stop on the host.
func TestStatusOfAContainersFile(t *testing.T) {
	needUnshare(t)
	path := filepath.Join(t.TempDir(), "job.pid")
	holder := start(t, inNewPIDNamespace(cliCmd("run", "-pidfile", path, "--", "sh", "-c", sleeper)), true)
	holder.out.expect(t, "ready")
	h, err := instancelock.ParseProcessLock(mustReadFile(t, path))
	if err != nil || h.PID != 1 || h.Local() {
		t.Fatalf("the container's PID file: %+v, %v; want pid 1 of another PID space", h, err)
	}

	r := runCLI(t, "status", path)
	if r.code != statusRunning || r.stderr != "" ||
		!strings.Contains(r.stdout, "running, pid 1 (in another PID namespace) holds the lock") ||
		!strings.Contains(r.stdout, "is alive in another PID namespace of this boot") || !strings.Contains(r.stdout, "lock:        held") {
		t.Errorf("status of a held file of another PID namespace: %+v", r)
	}
	if j, code := statusJSON(t, path); code != statusRunning || j["status"] != "running" || j["alive"] != true || j["stale"] != false {
		t.Errorf("status -json: %d %v", code, j)
	}
	// What a start does: refused.
	if r := runCLI(t, "run", "-pidfile", path, "--", "true"); r.code != 1 || !strings.Contains(r.stderr, "pid 1 (in another PID namespace)") {
		t.Errorf("run while the container holds the lock: %+v", r)
	}
	// stop signals nothing it cannot prove, and says so.
	if r := runCLI(t, "stop", "-timeout", "0", path); r.code != exitFail || !strings.Contains(r.stderr, "in another PID namespace of this boot") ||
		!strings.Contains(r.stderr, "not signalling anything") {
		t.Errorf("stop of a holder in another PID namespace: %+v", r)
	}
	if !holder.running() {
		t.Fatal("the container's holder was stopped")
	}

	// The container is killed: its file stays, its lock is free.
	holder.cmd.Process.Kill()
	holder.wait(t)
	eventually(t, "the container's lock is free", func() bool {
		return runCLI(t, "status", path).code != statusRunning
	})
	r = runCLI(t, "status", path)
	if r.code != statusStale || r.stderr != "" || !strings.Contains(r.stdout, "stale, pid 1 named in the file does not hold the lock, which is free") ||
		!strings.Contains(r.stdout, "written in another PID namespace of this boot") {
		t.Errorf("status of a free file of another PID namespace: %+v", r)
	}
	if j, code := statusJSON(t, path); code != statusStale || j["status"] != "stale" || j["alive"] != false || j["stale"] != true {
		t.Errorf("status -json: %d %v", code, j)
	}
	// stop removes it, as it removes every stale file.
	if r := runCLI(t, "stop", path); r.code != exitOK || !strings.Contains(r.stdout, "removed the stale PID file") || exists(path) {
		t.Errorf("stop of a stale file of another PID namespace: %+v", r)
	}

	// Killed again: a start takes the file over, as status said.
	holder = start(t, inNewPIDNamespace(cliCmd("run", "-pidfile", path, "--", "sh", "-c", sleeper)), true)
	holder.out.expect(t, "ready")
	holder.cmd.Process.Kill()
	holder.wait(t)
	eventually(t, "the container's lock is free", func() bool {
		return runCLI(t, "status", path).code == statusStale
	})
	if r := runCLI(t, "run", "-pidfile", path, "--", "true"); r.code != 0 {
		t.Errorf("run on the stale file status reported: %+v", r)
	}
}

// TestStatusFromAContainer: a holder on the host; status and stop run in
// a PID namespace of their own, whose /proc/locks does not list the
// host's lock: the lock is still seen held (the library tries it), never
// reported stale, and nothing is removed or signalled.
func TestStatusFromAContainer(t *testing.T) {
	needUnshare(t)
	path := filepath.Join(t.TempDir(), "job.pid")
	holder, _ := holdWithRun(t, path, sleeper)
	inside := func(args ...string) result {
		t.Helper()
		return runCmd(t, inNewPIDNamespace(cliCmd(args...)))
	}
	r := inside("status", path)
	if r.code != statusRunning || !strings.Contains(r.stdout, "running, pid "+strconv.Itoa(holder.pid())+" (in another PID namespace) holds the lock") {
		t.Errorf("status inside a PID namespace of a file the host holds: %+v", r)
	}
	if r := inside("stop", "-timeout", "0", path); r.code != exitFail || !strings.Contains(r.stderr, "not signalling anything") {
		t.Errorf("stop inside a PID namespace of a file the host holds: %+v", r)
	}
	if !holder.running() || !exists(path) {
		t.Fatal("the host's holder was stopped, or its file removed, from inside a PID namespace")
	}
	if r := inside("run", "-pidfile", path, "--", "true"); r.code != 1 {
		t.Errorf("run inside: %+v", r)
	}

	// The host's holder is killed: from inside, stale now.
	holder.cmd.Process.Kill()
	holder.wait(t)
	eventually(t, "the host's lock is free", func() bool {
		return inside("status", path).code == statusStale
	})
	if r := inside("run", "-pidfile", path, "--", "true"); r.code != 0 {
		t.Errorf("run inside, on the stale file: %+v", r)
	}
}

// TestStatusOfAnotherMachinesFile: a file of another boot or machine whose
// lock looks free is "unknown" (a holder there would not show here), with
// a reason that names this host once, not twice.
func TestStatusOfAnotherMachinesFile(t *testing.T) {
	me, err := instancelock.Current(0)
	if err != nil {
		t.Fatal(err)
	}
	mine, ok := pidspace.Parse(me.PIDSpace)
	if !ok {
		t.Skipf("no PID space here (%q)", me.PIDSpace)
	}
	host := myHost(t)
	dir := t.TempDir()
	now := time.Now().UTC().Truncate(time.Millisecond)
	write := func(name, space, hostname string) string {
		p := filepath.Join(dir, name)
		writeLock(t, p, instancelock.ProcessLock{PID: 4242, StartedAt: now, Hostname: hostname, PIDSpace: space})
		return p
	}
	otherBoot := "linux:another-boot:" + mine.NS + ":another-machine"
	for _, c := range []struct {
		path   string
		code   int
		stderr string
	}{
		{write("same-name.pid", otherBoot, host), statusUnknown, "was written on another machine or boot, also named " + host + " (its pidSpace is not this one's): its lock looks free here"},
		{write("other-name.pid", otherBoot, "web-2.example"), statusUnknown, "was written on host web-2.example, not on this one (" + host + "): its lock looks free here"},
		// Another PID namespace of this boot, by hand: the kernel says free.
		{write("this-boot.pid", "linux:"+mine.Boot+":4026599999:", host), statusStale, ""},
	} {
		r := runCLI(t, "status", c.path)
		if r.code != c.code || !strings.Contains(r.stderr, c.stderr) {
			t.Errorf("%s: %+v; want exit %d and %q", filepath.Base(c.path), r, c.code, c.stderr)
		}
		if c.code == statusUnknown {
			checkOneLineError(t, r, []string{"status", c.path})
			if n := strings.Count(r.stderr, host); n != 1 {
				t.Errorf("%s: the reason names this host %d times: %s", filepath.Base(c.path), n, r.stderr)
			}
			if r := runCLI(t, "stop", c.path); r.code != exitFail || strings.Count(r.stderr, host) != 1 || !exists(c.path) {
				t.Errorf("stop %s: %+v", filepath.Base(c.path), r)
			}
		}
	}
}
