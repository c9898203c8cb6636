package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock"
	"golang.org/x/sys/unix"
)

func init() { helpers["squat"] = helperSquat }

// helperSquat does what any user who can read the PID file
// INSTANCELOCK_CLI_PATH can: it binds the lock's abstract name (the hash
// of the path, as docs/design.md describes it) and holds a shared flock on
// the file; it says "squatting" and keeps both until stdin closes.
//
// With SQUAT_EXCLUSIVE=1 it binds no name and holds an exclusive flock on
// the read-only descriptor instead (Linux allows it).
func helperSquat() int {
	path := os.Getenv("INSTANCELOCK_CLI_PATH")
	if os.Getenv("SQUAT_EXCLUSIVE") == "1" {
		f, err := os.Open(path)
		if err == nil {
			err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		}
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		fmt.Println("squatting")
		io.Copy(io.Discard, os.Stdin)
		return 0
	}
	sum := sha256.Sum256([]byte(path))
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err == nil {
		err = unix.Bind(fd, &unix.SockaddrUnix{Name: "@instancelock/" + hex.EncodeToString(sum[:16])})
	}
	if err == nil {
		err = unix.Listen(fd, 64)
	}
	f, ferr := os.Open(path)
	if err == nil && ferr == nil {
		err = unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
	}
	if err != nil || ferr != nil {
		fmt.Println("error:", err, ferr)
		return 1
	}
	fmt.Println("squatting")
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// A stale PID file held by a shared flock while another user's socket has
// the lock's name: starts refuse it (no name, so no safe takeover), and
// status says so too, naming both, instead of "stale" (which a start
// would contradict) or "running" (no instance runs).
func TestStatusOfAFileSquattedWithTheName(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root to run a helper as another user")
		}
		t.Skip("needs root to run a helper as another user")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatal(err)
	}
	base, err := os.MkdirTemp("", "instancelock-squat-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "test.bin")
	data, err := os.ReadFile(os.Args[0])
	if err == nil {
		err = os.WriteFile(bin, data, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(base, "app.pid")
	dead := deadPID(t)
	writeLock(t, path, instancelock.ProcessLock{PID: dead, StartedAt: time.Now().UTC().Truncate(time.Millisecond), Hostname: myHost(t)})

	squat := helperCmd("squat", "INSTANCELOCK_CLI_PATH="+path, "GOCOVERDIR=")
	squat.Args = append([]string{setpriv, "--reuid=1234", "--regid=1234", "--clear-groups", "--", bin}, squat.Args[1:]...)
	squat.Path = setpriv
	in, err := squat.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := squat.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := squat.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { squat.Process.Kill(); squat.Wait() })
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "squatting\n" {
		t.Fatalf("squatter: %q", line)
	}

	spid := strconv.Itoa(squat.Process.Pid)
	r := runCLI(t, "status", path)
	if r.code != statusUnknown {
		t.Errorf("status: exit %d, want %d; stdout %q stderr %q", r.code, statusUnknown, r.stdout, r.stderr)
	}
	checkOneLineError(t, r, []string{"status", path})
	for _, want := range []string{"starts are refused", "shared locks hold the file (pid " + spid, "bound by pid " + spid + " (uid 1234)"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("status: stderr lacks %q: %q", want, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "already running") || strings.Contains(r.stdout, "stale") {
		t.Errorf("status: %q %q", r.stdout, r.stderr)
	}
	// A start says the same.
	l, err := instancelock.New(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.TryLock(); err == nil || !strings.Contains(err.Error(), "bound by pid "+spid+" (uid 1234)") {
		l.Unlock()
		t.Errorf("TryLock: %v", err)
	}

	in.Close()
	squat.Wait()
	if r := runCLI(t, "status", path); r.code != statusStale {
		t.Errorf("status once the squatter left: exit %d, want %d; %q %q", r.code, statusStale, r.stdout, r.stderr)
	}
}

// An exclusive flock taken on a read-only descriptor of a stale PID file
// by another user (Linux allows it), with no name bound: status says that
// starts are refused, naming the process (exit 4), never that the dead pid
// is alive or running; stop refuses and signals nothing.
func TestStatusOfAFileSquattedWithAnExclusiveFlock(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root to run a helper as another user")
		}
		t.Skip("needs root to run a helper as another user")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatal(err)
	}
	base, err := os.MkdirTemp("", "instancelock-squat-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "test.bin")
	data, err := os.ReadFile(os.Args[0])
	if err == nil {
		err = os.WriteFile(bin, data, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(base, "app.pid")
	dead := deadPID(t)
	writeLock(t, path, instancelock.ProcessLock{PID: dead, StartedAt: time.Now().UTC().Truncate(time.Millisecond), Hostname: myHost(t)})

	squat := helperCmd("squat", "INSTANCELOCK_CLI_PATH="+path, "GOCOVERDIR=", "SQUAT_EXCLUSIVE=1")
	squat.Args = append([]string{setpriv, "--reuid=1234", "--regid=1234", "--clear-groups", "--", bin}, squat.Args[1:]...)
	squat.Path = setpriv
	in, err := squat.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := squat.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := squat.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { squat.Process.Kill(); squat.Wait() })
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "squatting\n" {
		t.Fatalf("squatter: %q", line)
	}

	spid := strconv.Itoa(squat.Process.Pid)
	r := runCLI(t, "status", path)
	if r.code != statusUnknown {
		t.Errorf("status: exit %d, want %d; stdout %q stderr %q", r.code, statusUnknown, r.stdout, r.stderr)
	}
	checkOneLineError(t, r, []string{"status", path})
	for _, want := range []string{"starts are refused", "pid " + spid + " (uid 1234), which is not an instance", "0600"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("status: stderr lacks %q: %q", want, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "already running") || strings.Contains(r.stdout, "stale") ||
		strings.Contains(r.stdout, "alive") || strings.Contains(r.stdout, "running") {
		t.Errorf("status: %q %q", r.stdout, r.stderr)
	}
	// stop refuses the same way and signals nothing.
	if r := runCLI(t, "stop", path); r.code == 0 || !strings.Contains(r.stderr, "pid "+spid+" (uid 1234)") {
		t.Errorf("stop: exit %d; %q %q", r.code, r.stdout, r.stderr)
	}
	if err := squat.Process.Signal(unix.Signal(0)); err != nil {
		t.Errorf("the squatter is gone: %v", err)
	}
	// A start says the same.
	l, err := instancelock.New(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.TryLock(); err == nil || !strings.Contains(err.Error(), "pid "+spid+" (uid 1234), which is not an instance") {
		l.Unlock()
		t.Errorf("TryLock: %v", err)
	}

	in.Close()
	if err := squat.Wait(); err != nil {
		t.Errorf("the squatter did not exit by itself: %v", err)
	}
	if r := runCLI(t, "status", path); r.code != statusStale {
		t.Errorf("status once the squatter left: exit %d, want %d; %q %q", r.code, statusStale, r.stdout, r.stderr)
	}
}
