//go:build linux

package instancelock

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock/internal/proctest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func init() {
	helpers["nevertwo-holder"] = helperNeverTwoHolder
	helpers["nevertwo-contender"] = helperNeverTwoContender
	helpers["nevertwo-reader"] = helperNeverTwoReader
}

// helperNeverTwoHolder takes the lock at $PIDFILE with the periodic check
// set to an hour (so that only the inotify watch can tell it anything in a
// test) and $REPUBLISH, appends "enter <pid>" to $LEDGER, prints
// "locked <pid>", prints "lost" when Lost is closed, and on "unlock" on
// stdin appends "exit <pid>", releases and prints "unlocked".
func helperNeverTwoHolder() {
	l, err := newWith(os.Getenv("PIDFILE"), watchEvery(time.Hour), func(l *Locker) {
		l.DisableRepublish = os.Getenv("REPUBLISH") == "0"
		if os.Getenv("HOLDER_DEBUG") != "" {
			l.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	})
	if err != nil {
		fmt.Println("error", err)
		return
	}
	if err := l.TryLock(); err != nil {
		fmt.Println("error", strings.ReplaceAll(err.Error(), "\n", " "))
		return
	}
	ledger := ledgerAppend(os.Getenv("LEDGER"))
	ledger("enter")
	fmt.Println("locked", os.Getpid())
	go func() {
		<-l.Lost()
		fmt.Println("lost", time.Now().UnixNano(), strings.ReplaceAll(l.Err().Error(), "\n", " "))
	}()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() == "unlock" {
			ledger("exit")
			l.Unlock()
			fmt.Println("unlocked")
			return
		}
	}
}

// helperNeverTwoContender is a second instance, over and over: on "go R"
// it makes a new Locker for $PIDFILE and tries once, as a freshly started
// process would; if it wins it appends "enter"/"exit" to the ledger
// around its tenure and releases. It prints "won R", "lost R <pid>" or
// "err R <error>".
func helperNeverTwoContender() {
	ledger := ledgerAppend(os.Getenv("LEDGER"))
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		_, round, _ := strings.Cut(in.Text(), " ")
		l, err := newWith(os.Getenv("PIDFILE"), noWatch)
		if err == nil {
			err = l.TryLock()
		}
		var are *AlreadyRunningError
		switch {
		case err == nil:
			ledger("enter")
			ledger("exit")
			l.Unlock()
			fmt.Println("won", round)
		case errors.As(err, &are):
			fmt.Println("lost", round, are.Holder.PID)
		default:
			fmt.Println("err", round, strings.ReplaceAll(err.Error(), "\n", " "))
		}
	}
}

// helperNeverTwoReader calls Running on $PIDFILE in a loop until stdin
// closes, printing "reading" once it has started.
func helperNeverTwoReader() {
	l, err := New(os.Getenv("PIDFILE"))
	if err != nil {
		fmt.Println("error", err)
		return
	}
	done := make(chan struct{})
	go func() { bufio.NewScanner(os.Stdin).Scan(); close(done) }()
	fmt.Println("reading")
	for n := 0; ; n++ {
		select {
		case <-done:
			return
		default:
		}
		l.Running()
		l.Holder()
	}
}

// ledgerAppend returns a function that appends "<verb> <pid> <ns>" to the
// ledger file (O_APPEND: lines of several processes never mix).
func ledgerAppend(path string) func(verb string) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return func(string) {}
	}
	return func(verb string) {
		if !strings.Contains(verb, " ") {
			verb += " " + strconv.Itoa(os.Getpid())
		}
		fmt.Fprintf(f, "%s %d\n", verb, time.Now().UnixNano())
	}
}

// checkTenures fails the test if two tenures in the ledger overlap, and
// returns the number of tenures.
func checkTenures(t *testing.T, ledger string) int {
	t.Helper()
	data, err := os.ReadFile(ledger)
	require.NoError(t, err)
	holding, n := "", 0
	for i, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		require.Len(t, f, 3, "ledger line %d: %q", i, line)
		switch f[0] {
		case "enter":
			require.Empty(t, holding, "ledger line %d: pid %s entered while pid %s held the lock", i, f[1], holding)
			holding = f[1]
			n++
		case "exit":
			require.Equal(t, holding, f[1], "ledger line %d", i)
			holding = ""
		}
	}
	return n
}

// The file or its directory is pulled away from under a live holder, in
// every way: a second instance started at a random moment afterwards is
// refused in every round, the holder re-publishes its file (or, with
// DisableRepublish, is told) through inotify alone (its periodic check
// is an hour), no two tenures overlap, and once the holder exits or dies
// the next start acquires at once.
func TestNeverTwoWhateverHappensToTheFile(t *testing.T) {
	rounds := 50
	if testing.Short() {
		rounds = 10
	}
	ways := []string{"delete", "rename", "replace file", "replace directory"}
	for _, republish := range []bool{true, false} {
		for _, way := range ways {
			name := way
			if !republish {
				name += ", no republish"
			}
			t.Run(name, func(t *testing.T) {
				if !republish && way != "delete" && way != "replace directory" && testing.Short() {
					t.Skip("-short: two ways without re-publishing")
				}
				neverTwo(t, way, republish, rounds)
			})
		}
	}
}

func neverTwo(t *testing.T, way string, republish bool, rounds int) {
	base := t.TempDir()
	dir := filepath.Join(base, "data")
	path := filepath.Join(dir, "backend.pid")
	ledger := filepath.Join(base, "ledger")
	require.NoError(t, os.WriteFile(ledger, nil, 0o644))
	host, _ := os.Hostname()
	stale := lockJSON(t, ProcessLock{PID: deadPID(t), Hostname: host, StartToken: "linux:gone:1"})

	rep := "1"
	if !republish {
		rep = "0"
	}
	contender := helperCmd(t, "nevertwo-contender", "PIDFILE="+path, "LEDGER="+ledger)
	cin, cout := proctest.Start(t, contender)

	var told []time.Duration
	for r := range rounds {
		holder := helperCmd(t, "nevertwo-holder", "PIDFILE="+path, "LEDGER="+ledger, "REPUBLISH="+rep, "HOLDER_DEBUG="+os.Getenv("HOLDER_DEBUG"))
		hin, hout := proctest.Start(t, holder)
		line := hout.Next(30 * time.Second)
		locked := time.Now()
		require.True(t, strings.HasPrefix(line, "locked "), "round %d: %s", r, line)
		hpid := holder.Process.Pid

		// Pull at once (within armAfter, before the inotify watch is
		// armed) or later, at random.
		time.Sleep(time.Duration(rand.IntN(25000)) * time.Microsecond)
		armed := time.Since(locked) > armAfter+time.Millisecond
		pulled := time.Now()
		switch way {
		case "delete":
			require.NoError(t, os.Remove(path))
		case "rename":
			require.NoError(t, os.Rename(path, path+".moved"))
		case "replace file":
			writeFile(t, path+".new", stale)
			require.NoError(t, os.Rename(path+".new", path))
		case "replace directory":
			require.NoError(t, os.Rename(dir, dir+".old"))
			// The holder may have made the directory again already.
			if err := os.Mkdir(dir, 0o755); !errors.Is(err, fs.ErrExist) {
				require.NoError(t, err)
			}
			if r%2 == 1 {
				writeFile(t, path+".new", stale)
				require.NoError(t, os.Rename(path+".new", path))
			}
		}
		// A second instance, at a random moment from at once to a few
		// milliseconds later (before, during or after the holder reacts).
		time.Sleep(time.Duration(rand.IntN(4000)) * time.Microsecond)
		fmt.Fprintf(cin, "go %d\n", r)
		require.Equal(t, fmt.Sprintf("lost %d %d", r, hpid), cout.Next(30*time.Second), "round %d (%s): a second instance was not refused", r, way)

		if republish {
			// The holder puts its file back by itself.
			for {
				if data, err := os.ReadFile(path); err == nil {
					if pl, err := ParseProcessLock(data); err == nil && pl.PID == hpid {
						break
					}
				}
				if time.Since(pulled) > 20*time.Second {
					t.Fatalf("round %d (%s): the holder did not re-publish its file; it said: %s", r, way, hout.Next(time.Second))
				}
				time.Sleep(200 * time.Microsecond)
			}
			if armed {
				told = append(told, time.Since(pulled))
			}
			// Refused again, now that the file is back.
			fmt.Fprintf(cin, "go %d\n", r)
			require.Equal(t, fmt.Sprintf("lost %d %d", r, hpid), cout.Next(30*time.Second))
		} else {
			line := hout.Next(30 * time.Second)
			require.True(t, strings.HasPrefix(line, "lost "), "round %d (%s): %s", r, way, line)
			ns, _ := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			if armed {
				told = append(told, time.Unix(0, ns).Sub(pulled))
			}
			assert.Contains(t, line, "lock lost")
		}
		os.Remove(path + ".moved")
		os.RemoveAll(dir + ".old")

		// The holder exits (odd rounds) or dies (even rounds): the next
		// start acquires at once.
		if r%2 == 1 {
			fmt.Fprintln(hin, "unlock")
			require.Equal(t, "unlocked", hout.Next(30*time.Second))
		} else {
			holder.Process.Kill()
		}
		holder.Wait()
		if r%2 == 0 {
			// The kernel ended the killed holder's tenure when it died.
			ledgerAppend(ledger)("exit " + strconv.Itoa(hpid))
		}
		fmt.Fprintf(cin, "go %d\n", r)
		require.Equal(t, fmt.Sprintf("won %d", r), cout.Next(30*time.Second), "round %d (%s): the next start after the holder left", r, way)
		os.Remove(path) // a killed holder's (or a lost holder's) file
	}
	n := checkTenures(t, ledger)
	assert.Equal(t, 2*rounds, n, "one tenure of the holder and one of the next start per round")
	if len(told) > 0 {
		slices.Sort(told)
		t.Logf("%s, republish=%v: %d rounds; in the %d rounds pulled after the watch was armed, the holder re-published/was told after: median %v, max %v (its periodic check is 1 h: inotify told it)",
			way, republish, rounds, len(told), told[len(told)/2], told[len(told)-1])
	}
}

// A reader calling Running and Holder in a tight loop never makes a start
// fail: on Linux readers take no lock at all.
func TestReadersNeverMakeAStartFail(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "backend.pid")
	host, _ := os.Hostname()
	// A stale file naming a live, unrelated process (its start token is
	// another one).
	sleeper := exec.Command("sleep", "300")
	require.NoError(t, sleeper.Start())
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	stale := lockJSON(t, ProcessLock{PID: sleeper.Process.Pid, Hostname: host, StartToken: "linux:another:1"})
	writeFile(t, path, stale)

	reader := helperCmd(t, "nevertwo-reader", "PIDFILE="+path)
	rin, rout := proctest.Start(t, reader)
	require.Equal(t, "reading", rout.Next(30*time.Second))
	rounds := 300
	if testing.Short() {
		rounds = 50
	}
	for r := range rounds {
		l, err := newWith(path, noWatch)
		require.NoError(t, err)
		require.NoError(t, l.TryLock(), "round %d: a reader made a start fail", r)
		require.NoError(t, l.Unlock())
		writeFile(t, path, stale)
	}
	rin.(interface{ Close() error }).Close()
	require.NoError(t, sleeper.Process.Signal(syscall.Signal(0)), "the unrelated process was left alone")
}

// Holder proof: a file naming a live process that does not hold the lock
// is reported as such, and nothing is signalled; the real holder is
// proven by /proc/locks and by the lock's socket.
func TestOnlyTheProvenHolderIsSignalled(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.pid")
	sleeper := exec.Command("sleep", "300")
	require.NoError(t, sleeper.Start())
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	spid := sleeper.Process.Pid
	writeFile(t, path, strconv.Itoa(spid)+"\n")

	l, err := newWith(path)
	require.NoError(t, err)
	_, running, err := l.Running()
	var are *AlreadyRunningError
	require.ErrorAs(t, err, &are, "a bare PID of a live process: starts refuse")
	assert.True(t, are.Unlocked)
	assert.False(t, running, "nothing holds the lock")
	err = l.Terminate(nil)
	assert.ErrorIs(t, err, ErrNotRunning)
	assert.ErrorContains(t, err, fmt.Sprintf("pid %d is alive but does not hold the lock", spid))
	require.NoError(t, sleeper.Process.Signal(syscall.Signal(0)), "sleep was not signalled")
	are = nil
	if errors.As(l.TryLock(), &are) {
		assert.False(t, are.Proven)
		assert.True(t, are.Unlocked)
		assert.NotContains(t, are.Help("x"), "The lock is held")
		assert.NotContains(t, are.Help("x"), "kill ")
	} else {
		l.Unlock()
	}

	// A real holder is proven, by /proc/locks and by its socket, even
	// with its file gone.
	os.Remove(path)
	h := startHolder(t, path)
	s, err := l.look()
	require.NoError(t, err)
	assert.True(t, s.held && s.proven, "%+v", s)
	assert.Equal(t, h.pid, s.holder.PID)
	assert.Contains(t, s.how, "/proc/locks")
	err = l.TryLock()
	require.ErrorAs(t, err, &are)
	assert.True(t, are.Proven)
	assert.Equal(t, h.pid, are.Holder.PID)
	assert.Contains(t, are.Help("x"), fmt.Sprintf("kill %d", h.pid))

	require.NoError(t, os.Remove(path))
	s, err = l.look()
	require.NoError(t, err)
	assert.True(t, s.held && s.proven, "%+v", s)
	assert.Equal(t, h.pid, s.holder.PID)
	assert.Contains(t, s.how, "socket")
	require.NoError(t, l.Terminate(syscall.SIGKILL))
	h.cmd.Wait()
	require.NoError(t, l.TryLock(), "the holder is gone: the next start acquires at once")
	require.NoError(t, l.Unlock())
}

// A socket of another user bound to the lock's name cannot keep the
// service down: it is ignored, and the PID file's lock decides.
func TestAnotherUsersSocketIsIgnored(t *testing.T) {
	nobody := nobodyPrefix(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "x.pid")
	l, err := newWith(path)
	require.NoError(t, err)
	// python3 binds the abstract name as nobody and listens.
	name := strings.TrimPrefix(l.name, "@")
	sq := exec.Command(nobody[0], append(nobody[1:], "/usr/bin/python3", "-c",
		"import socket,sys,time\ns=socket.socket(socket.AF_UNIX)\ns.bind('\\0'+sys.argv[1])\ns.listen(1)\nprint('bound',flush=True)\ntime.sleep(600)", name)...)
	out := proctest.NewLines(t, sq)
	require.NoError(t, sq.Start())
	t.Cleanup(func() { sq.Process.Kill(); sq.Wait() })
	require.Equal(t, "bound", out.Next(30*time.Second))
	require.NoError(t, l.TryLock(), "another user's socket does not block the start")
	_, held := l.Info()
	assert.True(t, held)
	require.NoError(t, l.Unlock())
}

// nobodyPrefix returns the command prefix that runs a program as the user
// nobody, or skips the test (never under CI=true) where that is
// impossible.
func nobodyPrefix(t *testing.T) []string {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI runs as root; this test needs root to run a program as nobody")
		}
		t.Skip("needs root to run a program as another user (setpriv)")
	}
	p, err := exec.LookPath("setpriv")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("setpriv (util-linux) is missing")
		}
		t.Skip("setpriv (util-linux) is missing")
	}
	return []string{p, "--reuid=nobody", "--regid=nogroup", "--clear-groups"}
}

// Squatting: a user who can only read the PID file holds a shared flock
// on it. When the holder dies, the next start still acquires, at once.
func TestSquatterCannotKeepTheServiceDown(t *testing.T) {
	nobody := nobodyPrefix(t)
	base, err := os.MkdirTemp("", "squat")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(base) })
	require.NoError(t, os.Chmod(base, 0o755)) // the recommended layout: root-owned 0755, file 0644
	path := filepath.Join(base, "backend.pid")

	h := startHolder(t, path)
	sq := exec.Command(nobody[0], append(nobody[1:], "sh", "-c", `exec 3<"$1"; flock -s 3; echo squatting; exec sleep 600`, "sh", path)...)
	out := proctest.NewLines(t, sq)
	require.NoError(t, sq.Start())
	t.Cleanup(func() { sq.Process.Kill(); sq.Wait() })
	// flock -s waits while the holder lives, and gets the shared lock the
	// moment it dies.
	h.kill(t)
	require.Equal(t, "squatting", out.Next(30*time.Second))
	l, err := newWith(path)
	require.NoError(t, err)
	require.NoError(t, l.TryLock(), "a reader's shared lock does not keep the service down")
	info, _ := l.Info()
	got, err := l.Holder()
	require.NoError(t, err)
	assert.True(t, got.Equal(info))
	s, err := l.look()
	require.NoError(t, err)
	assert.True(t, s.proven)
	require.NoError(t, l.Unlock())

	// Another restart, squatter still there (now on an unlinked inode).
	require.NoError(t, l.TryLock())
	require.NoError(t, l.Unlock())
}

type notASyscallSignal struct{}

func (notASyscallSignal) String() string { return "not a syscall signal" }
func (notASyscallSignal) Signal()        {}

// signalPinned proves before it signals, and signals through a pidfd.
func TestSignalPinned(t *testing.T) {
	sleeper := exec.Command("sleep", "300")
	require.NoError(t, sleeper.Start())
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	pid := sleeper.Process.Pid
	refused := errors.New("not proven")
	assert.ErrorIs(t, signalPinned(pid, syscall.SIGTERM, func() error { return refused }), refused)
	assert.Error(t, signalPinned(pid, notASyscallSignal{}, func() error { return nil }))
	alive, _ := osProcesses{}.Alive(pid)
	require.True(t, alive, "nothing was sent")
	assert.ErrorIs(t, signalPinned(deadPID(t), syscall.SIGTERM, func() error { return nil }), ErrNoProcess)
	require.NoError(t, signalPinned(pid, syscall.SIGKILL, func() error { return nil }))
	sleeper.Wait()
	assert.Equal(t, syscall.SIGKILL, sleeper.ProcessState.Sys().(syscall.WaitStatus).Signal())
}

// The proof's helpers on inputs that prove nothing.
func TestProofEdges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.pid")
	l, err := newWith(path) // set up: these tests call the internals
	require.NoError(t, err)
	assert.False(t, l.tokenMatches(ProcessLock{PID: 0}))
	h, proven := l.peerHolder(peer{pid: 0, uid: 0})
	assert.False(t, proven, "a pid of another PID namespace proves nothing")
	assert.Zero(t, h.PID)
	_, _, err = flockOwners(fakeInfo{})
	assert.ErrorIs(t, err, errors.ErrUnsupported)

	// A name the kernel refuses: the lock rests on the file alone.
	l.name = "@" + strings.Repeat("n", 200)
	require.NoError(t, l.TryLock())
	require.NoError(t, l.Unlock())

	// Terminate on a path that cannot be looked at says why.
	require.NoError(t, os.Mkdir(filepath.Join(filepath.Dir(path), "d.pid"), 0o755))
	ld, err := New(filepath.Join(filepath.Dir(path), "d.pid"))
	require.NoError(t, err)
	assert.ErrorContains(t, ld.Terminate(nil), "terminate")

	// A process table that cannot probe: nothing looks stale, nothing is
	// proven.
	lm, err := newWith(path, func(l *Locker) { l.Processes = failingProcs{errors.New("probe failed")} })
	require.NoError(t, err)
	assert.False(t, lm.staleLooking(ProcessLock{PID: 77}))
	assert.False(t, lm.tokenMatches(ProcessLock{PID: 77}))
}

// failingProcs is a ProcessTable whose every probe fails.
type failingProcs struct{ err error }

func (p failingProcs) Alive(int) (bool, error)              { return false, p.err }
func (p failingProcs) Start(int) (string, time.Time, error) { return "", time.Time{}, p.err }
func (p failingProcs) Signal(int, os.Signal) error          { return p.err }

type fakeInfo struct{ fs.FileInfo }

func (fakeInfo) Sys() any { return nil }

// Squatting in the in-place layout (root-owned directory, PID file
// prepared for the service user): another unprivileged user's shared
// flock on the file does not keep the service down after its holder dies.
func TestSquatterInPlaceLayout(t *testing.T) {
	requireRoot(t, "setpriv", "flock")
	dir := filepath.Join(sharedDir(t), "run-app")
	require.NoError(t, os.Mkdir(dir, 0o755))
	path := filepath.Join(dir, "app.pid")
	require.NoError(t, os.WriteFile(path, nil, 0o644))
	require.NoError(t, os.Chown(path, 65534, 65534))

	first := asNobody(t, "layout-lock", "PIDFILE="+path)
	_, out := proctest.Start(t, first)
	require.Equal(t, "locked", out.Next(20*time.Second))
	// The squatter is another user (daemon, uid 1) who can read the file.
	sq := exec.Command("setpriv", "--reuid=1", "--regid=1", "--clear-groups", "sh", "-c",
		`exec 3<"$1"; flock -s 3; echo squatting; exec sleep 600`, "sh", path)
	sqOut := proctest.NewLines(t, sq)
	require.NoError(t, sq.Start())
	t.Cleanup(func() { sq.Process.Kill(); sq.Wait() })
	require.NoError(t, first.Process.Kill())
	first.Wait()
	require.Equal(t, "squatting", sqOut.Next(20*time.Second))

	second := asNobody(t, "layout-lock", "PIDFILE="+path)
	_, out2 := proctest.Start(t, second)
	require.Equal(t, "locked", out2.Next(20*time.Second), "the squatter kept the service down")
	h, err := ParseProcessLock(mustReadFile(t, path))
	require.NoError(t, err)
	assert.Equal(t, second.Process.Pid, h.PID)
	// A third start is refused while the second lives.
	_, out3 := proctest.Start(t, asNobody(t, "layout-lock", "PIDFILE="+path))
	assert.Contains(t, out3.Next(20*time.Second), "already running")
}
