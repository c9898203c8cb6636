//go:build windows

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock"
)

// On Windows the command's own tests run with the test binary as the
// program that `run` starts (there is no sh), as a helper named by
// INSTANCELOCK_CLI_HELPER in the command's environment.

func init() {
	helpers["exit7"] = func() int { return 7 }
	// holder-pid prints the pid of the holder of INSTANCELOCK_CLI_PATH and
	// this process's parent.
	helpers["holder-pid"] = func() int {
		l, err := instancelock.New(os.Getenv("INSTANCELOCK_CLI_PATH"))
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		h, err := l.Holder()
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		fmt.Println("holder", h.PID, "parent", os.Getppid())
		return 0
	}
	// sleeper says "ready PID" and sleeps for a minute, whatever happens
	// to its standard input and output.
	helpers["sleeper"] = func() int {
		fmt.Println("ready", os.Getpid())
		time.Sleep(time.Minute)
		return 0
	}
}

// exists reports whether path exists.
func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func TestWindowsRunExitStatusAndWrapper(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "job.pid")
	cmd := cliCmd("run", "-pidfile", pidfile, "--", os.Args[0])
	cmd.Env = append(cmd.Env, cliHelperEnv+"=exit7")
	if r := runCmd(t, cmd); r.code != 7 {
		t.Errorf("run of a program that exits 7: %+v", r)
	}
	if exists(pidfile) {
		t.Error("run left its PID file")
	}

	cmd = cliCmd("run", "-pidfile", pidfile, "--", os.Args[0])
	cmd.Env = append(cmd.Env, cliHelperEnv+"=holder-pid", "INSTANCELOCK_CLI_PATH="+pidfile)
	r := runCmd(t, cmd)
	var holder, parent int
	if _, err := fmt.Sscanf(r.stdout, "holder %d parent %d", &holder, &parent); err != nil || r.code != 0 {
		t.Fatalf("run: %+v (%v)", r, err)
	}
	if holder != parent {
		t.Errorf("the PID file names pid %d, not the wrapper %d", holder, parent)
	}
}

func TestWindowsRunConflictStatusStop(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "job.pid")
	cmd := cliCmd("run", "-pidfile", pidfile, "--", os.Args[0])
	cmd.Env = append(cmd.Env, cliHelperEnv+"=sleeper")
	wrapper := start(t, cmd, true)
	var program int
	fmt.Sscanf(wrapper.out.expect(t, "ready"), "ready %d", &program)

	second := cliCmd("run", "-pidfile", pidfile, "--", os.Args[0])
	second.Env = append(second.Env, cliHelperEnv+"=exit7")
	r := runCmd(t, second)
	if r.code != 1 || !strings.Contains(r.stderr, fmt.Sprintf("held by pid %d", wrapper.pid())) {
		t.Errorf("a second run while held: %+v", r)
	}

	r = runCLI(t, "status", "-json", pidfile)
	var st map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || r.code != 0 || st["pid"] != float64(wrapper.pid()) {
		t.Errorf("status while held: %+v", r)
	}

	// A handle on the program, taken while it runs, tells when it exits.
	pp, err := os.FindProcess(program)
	if err != nil {
		t.Fatal(err)
	}
	programExited := make(chan struct{})
	go func() { pp.Wait(); close(programExited) }()
	t.Cleanup(func() { pp.Kill(); <-programExited })

	// Windows can only terminate: stop sends KILL (TerminateProcess),
	// and removes the file the killed wrapper left.
	r = runCLI(t, "stop", "-signal", "TERM", pidfile)
	if r.code != 2 || !strings.Contains(r.stderr, "only KILL can be sent on windows") {
		t.Errorf("stop -signal TERM: %+v", r)
	}
	if r := runCLI(t, "stop", "-h"); !strings.Contains(r.stdout, "only KILL can be sent (on Windows, TerminateProcess)") {
		t.Errorf("stop -h does not say what stop can do on Windows:\n%s", r.stdout)
	}
	r = runCLI(t, "stop", "-timeout", "5s", pidfile)
	if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("sent SIGKILL to pid %d", wrapper.pid())) {
		t.Errorf("stop: %+v", r)
	}
	if code := wrapper.wait(t); code != 1 {
		t.Errorf("the wrapper exited %d, want 1 (TerminateProcess)", code)
	}
	// The program dies with its wrapper (the job object the wrapper put it
	// in closes with the wrapper).
	eventually(t, "the program died with the wrapper", func() bool {
		select {
		case <-programExited:
			return true
		default:
			return false
		}
	})
	eventually(t, "the PID file is gone", func() bool { return !exists(pidfile) })
	if r := runCLI(t, "status", pidfile); r.code != 3 {
		t.Errorf("status after stop: %+v", r)
	}
}
