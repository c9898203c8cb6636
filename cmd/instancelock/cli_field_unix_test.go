//go:build unix

package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ad5dec64/instancelock"
)

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
			if r.code != 0 || exists(path) {
				t.Errorf("stop did not remove the remnant: %+v", r)
			}
		})
	}
}

// A file that is not a PID file is someone's: status says 4, run and stop
// refuse, and the file is left byte for byte as it was.
func TestForeignFilesAreRefused(t *testing.T) {
	for name, content := range map[string]string{
		"notes":  "notes\n",
		"SQLite": "SQLite format 3\x00\x10\x00\x02\x02\x00@  " + strings.Repeat("\x00", 200),
		"JSON":   `{"pid":123,"startedAt":"2026-01-01T00:00:00Z"}]]]`,
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
