package instancelock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func init() { helpers["errors-op"] = helperErrorsOp }

// errorTargets are what an error of a Locker may match, by name: the
// sentinels with errors.Is, and the error types with errors.As.
var errorTargets = []struct {
	name  string
	match func(error) bool
}{
	{"ErrAlreadyRunning", func(err error) bool { return errors.Is(err, ErrAlreadyRunning) }},
	{"ErrAlreadyHeld", func(err error) bool { return errors.Is(err, ErrAlreadyHeld) }},
	{"ErrNotRunning", func(err error) bool { return errors.Is(err, ErrNotRunning) }},
	{"ErrNotHeld", func(err error) bool { return errors.Is(err, ErrNotHeld) }},
	{"ErrLockLost", func(err error) bool { return errors.Is(err, ErrLockLost) }},
	{"ErrForeignFile", func(err error) bool { return errors.Is(err, ErrForeignFile) }},
	{"ErrInvalidLock", func(err error) bool { return errors.Is(err, ErrInvalidLock) }},
	{"ErrWouldBlock", func(err error) bool { return errors.Is(err, ErrWouldBlock) }},
	{"fs.ErrNotExist", func(err error) bool { return errors.Is(err, fs.ErrNotExist) }},
	{"fs.ErrPermission", func(err error) bool { return errors.Is(err, fs.ErrPermission) }},
	{"DeadlineExceeded", func(err error) bool { return errors.Is(err, context.DeadlineExceeded) }},
	{"*fs.PathError", func(err error) bool { return errors.As(err, new(*fs.PathError)) }},
	{"*AlreadyRunningError", func(err error) bool { return errors.As(err, new(*AlreadyRunningError)) }},
}

// errorReport is what the table checks of an error; a helper process
// prints it as JSON.
type errorReport struct {
	Msg     string   `json:"msg"`
	Matches []string `json:"matches"`
}

func reportError(err error) errorReport {
	r := errorReport{Msg: err.Error()}
	for _, tg := range errorTargets {
		if tg.match(err) {
			r.Matches = append(r.Matches, tg.name)
		}
	}
	return r
}

// errorCase is one error path of a Locker.
type errorCase struct {
	name string
	// run sets up what the path needs (real files in dir, real processes)
	// and returns the error of the call under test on path.
	run func(t *testing.T, path string) error
	// op, instead of run, is a call that helperErrorsOp makes (see
	// runOp), after setup; unprivileged runs it as the user nobody when
	// the test runs as root, since root passes permission checks.
	setup        func(t *testing.T, path string)
	op           string
	unprivileged bool
	inHelper     bool   // run op in a helper process (it changes the process)
	names        string // what the message names once, when not the path
	// matches is exactly what the error matches (errorTargets): every
	// other target is asserted not to match.
	matches []string
	// says is a part of the message (what happened, or what to do).
	says string
}

// Each error path of the Locker (New, TryLock, Lock, Unlock, Holder,
// Running, Terminate, CleanStale): exactly what it matches with errors.Is
// and errors.As, and a message that names the PID file's path once.
func TestErrorPaths(t *testing.T) {
	cases := append(errorCases(), errorCasesOS()...)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			base := t.TempDir()
			if c.unprivileged {
				base = sharedTempDir(t)
			}
			path := filepath.Join(base, "run", "app.pid")
			require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
			var got errorReport
			switch {
			case c.run != nil:
				err := c.run(t, path)
				require.Error(t, err)
				got = reportError(err)
			default:
				if c.setup != nil {
					c.setup(t, path)
				}
				got = runOpAs(t, c.op, path, c.unprivileged, c.inHelper)
			}
			t.Logf("%s", got.Msg)
			assert.ElementsMatch(t, c.matches, got.Matches, "what the error matches: %s", got.Msg)
			names := path
			if c.names != "" {
				names = c.names
			}
			assert.Equal(t, 1, strings.Count(got.Msg, names), "the message names the path once: %s", got.Msg)
			assert.Contains(t, got.Msg, c.says)
			assert.NotContains(t, got.Msg, "\n", "one line")
		})
	}
}

func errorCases() []errorCase {
	foreign := func(t *testing.T, path string) { writeFile(t, path, "key = value\n") }
	dir := func(t *testing.T, path string) { require.NoError(t, os.Mkdir(path, 0o755)) }
	deadFile := func(t *testing.T, path string) {
		host, _ := os.Hostname()
		writeFile(t, path, lockJSON(t, ProcessLock{PID: deadPID(t), Hostname: host}))
	}
	// liveBarePID writes the legacy format naming a live process of this
	// host that takes no lock.
	liveBarePID := func(t *testing.T, path string) {
		sleeper := helperCmd(t, "pidfile-sleep")
		require.NoError(t, sleeper.Start())
		t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
		time.Sleep(10 * time.Millisecond) // older than the file (see judgePID)
		writeFile(t, path, fmt.Sprintf("%d\n", sleeper.Process.Pid))
	}
	locker := func(t *testing.T, path string) *Locker {
		l, err := New(path)
		require.NoError(t, err)
		return l
	}
	same := []string{"ErrAlreadyRunning", "*AlreadyRunningError"}
	notDir := []string{"*fs.PathError"} // ENOTDIR
	if runtime.GOOS == "windows" {
		notDir = append(notDir, "fs.ErrNotExist") // ERROR_PATH_NOT_FOUND
	}
	foreignErr := []string{"ErrForeignFile", "*fs.PathError"}
	return []errorCase{
		// TryLock and Lock.
		{name: "TryLock/another process holds the lock", run: func(t *testing.T, path string) error {
			startHolder(t, path)
			return locker(t, path).TryLock()
		}, matches: same, says: "holds"},
		{name: "TryLock/this Locker holds the lock", run: func(t *testing.T, path string) error {
			l := locker(t, path)
			require.NoError(t, l.TryLock())
			t.Cleanup(func() { l.Unlock() })
			return l.TryLock()
		}, matches: []string{"ErrAlreadyHeld"}, says: "already held"},
		{name: "TryLock/someone's file", setup: foreign, op: "TryLock", matches: foreignErr, says: "choose another PID file path"},
		{name: "TryLock/a directory at the path", setup: dir, op: "TryLock", matches: foreignErr, says: "not a regular file"},
		{name: "TryLock/a symbolic link at the path", run: func(t *testing.T, path string) error {
			writeFile(t, path+".real", "")
			symlinkOrSkip(t, path+".real", path)
			return locker(t, path).TryLock()
		}, matches: foreignErr, says: "symbolic link"},
		{name: "TryLock/the directory is a file", run: func(t *testing.T, path string) error {
			require.NoError(t, os.Remove(filepath.Dir(path)))
			writeFile(t, filepath.Dir(path), "a file")
			return locker(t, path).TryLock()
		}, matches: notDir},
		{name: "TryLock/a bare PID of a live process that takes no lock", setup: liveBarePID, op: "TryLock", matches: same, says: "holds"},
		{name: "Lock/ctx ends while another process holds the lock", run: func(t *testing.T, path string) error {
			startHolder(t, path)
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			return locker(t, path).Lock(ctx)
		}, matches: append([]string{"DeadlineExceeded"}, same...), says: "context deadline exceeded: instancelock: another instance is already running"},
		{name: "Lock/someone's file", setup: foreign, op: "Lock", matches: foreignErr, says: "not a PID file"},

		// Holder and Running.
		{name: "Holder/no file", op: "Holder", matches: []string{"ErrNotRunning", "fs.ErrNotExist", "*fs.PathError"}, says: "no instance is running (file does not exist)"},
		{name: "Holder/someone's file", setup: foreign, op: "Holder", matches: []string{"ErrForeignFile", "ErrInvalidLock", "*fs.PathError"}, says: "not a PID file"},
		{name: "Holder/what a crash left", setup: func(t *testing.T, path string) { writeFile(t, path, `{"pid":12,"sta`) }, op: "Holder",
			matches: []string{"ErrInvalidLock", "*fs.PathError"}, says: "what a crash left"},
		{name: "Holder/a directory at the path", setup: dir, op: "Holder", matches: foreignErr, says: "not a regular file"},
		{name: "Running/someone's file", setup: foreign, op: "Running", matches: foreignErr, says: "not a PID file"},
		{name: "Running/a bare PID of a live process that takes no lock", setup: liveBarePID, op: "Running", matches: same, says: "holds"},

		// Terminate.
		{name: "Terminate/no file", op: "Terminate", matches: []string{"ErrNotRunning"}, says: "nothing signalled"},
		{name: "Terminate/a stale file", setup: deadFile, op: "Terminate", matches: []string{"ErrNotRunning"}, says: "nothing signalled"},
		{name: "Terminate/a live process that does not hold the lock", setup: liveBarePID, op: "Terminate",
			matches: []string{"ErrNotRunning"}, says: "alive but does not hold the lock"},
		{name: "Terminate/this Locker holds the lock", run: func(t *testing.T, path string) error {
			l := locker(t, path)
			require.NoError(t, l.TryLock())
			t.Cleanup(func() { l.Unlock() })
			return l.Terminate(nil)
		}, matches: []string{"ErrAlreadyHeld"}, says: "nothing signalled"},
		{name: "Terminate/another Locker of this process holds the lock", run: func(t *testing.T, path string) error {
			l := locker(t, path)
			require.NoError(t, l.TryLock())
			t.Cleanup(func() { l.Unlock() })
			return locker(t, path).Terminate(nil)
		}, matches: []string{"ErrAlreadyHeld"}, says: "nothing signalled"},
		{name: "Terminate/a holder that is not proven (its file names a process of another host)", run: func(t *testing.T, path string) error {
			h := startHolder(t, path)
			t.Cleanup(func() { h.kill(t) })
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
			require.NoError(t, err)
			_, err = f.WriteString(lockJSON(t, ProcessLock{PID: deadPID(t), Hostname: "web-2"}))
			require.NoError(t, err)
			require.NoError(t, f.Close())
			err = locker(t, path).Terminate(nil)
			alive, aerr := osProcesses{}.Alive(h.pid)
			require.NoError(t, aerr)
			require.True(t, alive, "the holder was not signalled")
			return err
		}, matches: same, says: "nothing signalled"},
		{name: "Terminate/someone's file", setup: foreign, op: "Terminate", matches: foreignErr, says: "not a PID file"},

		// CleanStale.
		{name: "CleanStale/someone's file", setup: foreign, op: "CleanStale", matches: foreignErr, says: "not a PID file"},
		{name: "CleanStale/a directory at the path", setup: dir, op: "CleanStale", matches: foreignErr, says: "not a regular file"},
	}
}

// runOp makes the call op names on a new Locker for path and returns its
// error.
func runOp(op, path string) error {
	if op == "New in a removed working directory" {
		dir, err := os.MkdirTemp("", "instancelock-cwd-")
		if err == nil {
			err = os.Chdir(dir)
		}
		if err == nil {
			err = os.Remove(dir)
		}
		if err != nil {
			return fmt.Errorf("setting up: %w", err)
		}
		_, err = New(filepath.Base(path))
		return err
	}
	l, err := New(path)
	if err != nil {
		return err
	}
	switch op {
	case "TryLock":
		err = l.TryLock()
	case "Lock":
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = l.Lock(ctx)
	case "Holder":
		_, err = l.Holder()
	case "Running":
		_, _, err = l.Running()
	case "Terminate":
		err = l.Terminate(nil)
	case "CleanStale":
		_, err = l.CleanStale()
	case "Unlock":
		// The directory becomes read-only while the lock is held: the
		// file cannot be removed.
		if err = l.TryLock(); err != nil {
			return fmt.Errorf("TryLock before Unlock: %w", err)
		}
		dir := filepath.Dir(path)
		if err = os.Chmod(dir, 0o555); err != nil {
			return fmt.Errorf("chmod before Unlock: %w", err)
		}
		err = l.Unlock()
		os.Chmod(dir, 0o755)
	default:
		return fmt.Errorf("unknown op %q", op)
	}
	if err == nil && op != "Unlock" {
		l.Unlock()
	}
	return err
}

// helperErrorsOp runs $OP on $PIDFILE and prints the errorReport of its
// error as JSON ("null" when it succeeded).
func helperErrorsOp() {
	err := runOp(os.Getenv("OP"), os.Getenv("PIDFILE"))
	var out []byte
	if err == nil {
		out = []byte("null")
	} else {
		out, _ = json.Marshal(reportError(err))
	}
	fmt.Println(string(out))
}

// runOpAs runs op on path in this process, or in a helper process: when
// inHelper, or, as the user nobody, when unprivileged and this test runs
// as root.
func runOpAs(t *testing.T, op, path string, unprivileged, inHelper bool) errorReport {
	t.Helper()
	env := []string{"OP=" + op, "PIDFILE=" + path}
	cmd := helperCmd(t, "errors-op", env...)
	switch {
	case unprivileged && isRoot():
		cmd = asNobodyOrFail(t, "errors-op", env...)
	case !inHelper:
		err := runOp(op, path)
		require.Error(t, err, "%s on %s", op, path)
		return reportError(err)
	}
	out, err := cmd.Output()
	require.NoError(t, err, "helper: %s", out)
	var r *errorReport
	require.NoError(t, json.Unmarshal(out, &r), "helper: %s", out)
	require.NotNil(t, r, "%s on %s as nobody: no error", op, path)
	slices.Sort(r.Matches)
	return *r
}

func isRoot() bool { return runtime.GOOS != "windows" && os.Geteuid() == 0 }
