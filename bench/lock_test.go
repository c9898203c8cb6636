package bench

import (
	"context"
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
	"github.com/ad5dec64/instancelock/internal/proctest"
	"github.com/gofrs/flock"
	"github.com/nightlyone/lockfile"

	"github.com/ad5dec64/instancelock/internal/testserver"
)

// Benchmarks and tests that need real processes re-run this test binary as
// a helper process (internal/proctest): helperCmd starts it with BENCH_HELPER=name and TestMain
// runs helpers[name] instead of the tests and benchmarks. A helper reads its
// arguments from the environment and reports on stdout, one line per step.
var helpers = map[string]func(){}

const (
	helperEnv = "BENCH_HELPER"
	implEnv   = "BENCH_IMPL" // which library the helper locks with
	pathEnv   = "BENCH_PATH" // the lock file
)

func TestMain(m *testing.M) {
	proctest.RunHelper(helperEnv, helpers)
	code := m.Run()
	testserver.StopShared() // the servers of the fleet benchmarks
	os.Exit(code)
}

// helperCmd returns a command that runs helpers[name] in a child process
// with env added to the environment (see proctest.Command: under -race the
// helper skips the race runtime's one-second sleep at exit, which would
// otherwise dominate the tests' time).
func helperCmd(name string, env ...string) *exec.Cmd {
	return proctest.Command(helperEnv, name, env...)
}

// helperFail reports a helper's failure on stdout, where the parent reads
// it, and exits.
func helperFail(format string, args ...any) {
	fmt.Printf("error "+format+"\n", args...)
	os.Exit(1)
}

// expect returns the next line of lr if it starts with prefix, and an
// error if it does not, if the helper ends its output, or if no line comes
// within d.
func expect(lr *proctest.Lines, prefix string, d time.Duration) (string, error) {
	l, err := lr.Line(d)
	switch {
	case err != nil:
		return "", fmt.Errorf("waiting for %q: %w", prefix, err)
	case !strings.HasPrefix(l, prefix):
		return "", fmt.Errorf("helper said %q, %q was expected", l, prefix)
	}
	return l, nil
}

// The libraries compared. floor is not a lock: it is the least work a PID
// file lock can do (create exclusively, write, close, unlink).
const (
	implInstancelock = "instancelock"
	implNoWatch      = "instancelock-nowatch" // instancelock with WatchInterval -1
	implFloor        = "floor"
	implSyscalls     = "syscalls" // instancelock's system calls alone (Linux)
	implNightlyone   = "nightlyone"
	implGofrs        = "gofrs-flock"
	// implBlocking is gofrs/flock waiting in a blocking flock(LOCK_EX),
	// which the kernel wakes as soon as the lock is free: the floor of a
	// hand-off. It cannot be cancelled.
	implBlocking = "flock-blocking"
)

// gofrsRetry is the retry delay given to gofrs/flock's TryLockContext.
const gofrsRetry = 10 * time.Millisecond

// handle is one library's lock on one path, behind a common shape.
type handle struct {
	// try takes the lock without waiting; false with a nil error means
	// another process holds it.
	try func() (bool, error)
	// wait takes the lock, waiting until ctx is done; nil when taken.
	// Nil for libraries that cannot wait.
	wait    func(ctx context.Context) error
	release func() error
}

func newHandle(impl, path string) (*handle, error) {
	switch impl {
	case implInstancelock, implNoWatch:
		l, err := instancelock.New(path)
		if err != nil {
			return nil, err
		}
		if impl == implNoWatch {
			l.WatchInterval = -1
		}
		return &handle{
			try: func() (bool, error) {
				err := l.TryLock()
				if errors.Is(err, instancelock.ErrAlreadyRunning) {
					return false, nil
				}
				return err == nil, err
			},
			wait:    l.Lock,
			release: l.Unlock,
		}, nil
	case implNightlyone:
		lf, err := lockfile.New(path)
		if err != nil {
			return nil, err
		}
		return &handle{
			try: func() (bool, error) {
				err := lf.TryLock()
				if errors.Is(err, lockfile.ErrBusy) {
					return false, nil
				}
				return err == nil, err
			},
			release: lf.Unlock,
		}, nil
	case implGofrs, implBlocking:
		f := flock.New(path)
		wait := func(ctx context.Context) error {
			ok, err := f.TryLockContext(ctx, gofrsRetry)
			if err == nil && !ok {
				err = errors.New("gofrs/flock: not locked")
			}
			return err
		}
		if impl == implBlocking {
			wait = func(context.Context) error { return f.Lock() }
		}
		return &handle{try: f.TryLock, wait: wait, release: f.Unlock}, nil
	case implSyscalls:
		return newSyscallsHandle(path)
	case implFloor:
		line := []byte(strconv.Itoa(os.Getpid()) + "\n")
		return &handle{
			try: func() (bool, error) {
				fd, err := syscall.Open(path, syscall.O_CREAT|syscall.O_EXCL|syscall.O_WRONLY|syscall.O_CLOEXEC, 0o644)
				if err != nil {
					return false, &os.PathError{Op: "open", Path: path, Err: err}
				}
				_, err = syscall.Write(fd, line)
				if cerr := syscall.Close(fd); err == nil {
					err = cerr
				}
				return err == nil, err
			},
			release: func() error { return syscall.Unlink(path) },
		}, nil
	}
	return nil, fmt.Errorf("unknown implementation %q", impl)
}

// benchDirs are the file systems compared: the test's temporary directory
// (ext4 or whatever backs $TMPDIR) and /dev/shm (tmpfs).
var benchDirs = []struct {
	name string
	dir  func(b *testing.B) string
}{
	{"tmp", func(b *testing.B) string { return b.TempDir() }},
	{"shm", func(b *testing.B) string {
		if fi, err := os.Stat("/dev/shm"); err != nil || !fi.IsDir() {
			b.Skip("no /dev/shm on this system")
		}
		dir, err := os.MkdirTemp("/dev/shm", "instancelock-bench-")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
		return dir
	}},
}

// BenchmarkAcquireRelease measures one uncontended acquire + release cycle
// of each library on the same path, on each file system.
func BenchmarkAcquireRelease(b *testing.B) {
	for _, fsys := range benchDirs {
		b.Run("fs="+fsys.name, func(b *testing.B) {
			for _, impl := range []string{implInstancelock, implNoWatch, implSyscalls, implFloor, implNightlyone, implGofrs} {
				b.Run("impl="+impl, func(b *testing.B) {
					path := filepath.Join(fsys.dir(b), "bench.pid")
					h, err := newHandle(impl, path)
					if errors.Is(err, errors.ErrUnsupported) {
						b.Skipf("%s: Linux only", impl)
					}
					if err != nil {
						b.Fatal(err)
					}
					b.ReportAllocs()
					for b.Loop() {
						ok, err := h.try()
						if !ok || err != nil {
							b.Fatalf("acquire: held=%v, err=%v", ok, err)
						}
						if err := h.release(); err != nil {
							b.Fatalf("release: %v", err)
						}
					}
				})
			}
		})
	}
}
