//go:build unix

package instancelock

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func init() { helpers["stress-contender"] = helperContender }

// helperContender is one of the stress test's processes. It obeys lines on
// stdin:
//
//	go R       print "ready R", wait at the barrier (a shared flock the
//	           parent holds exclusively), then TryLock once and print
//	           "won R" or "lost R <holder pid>" (or "err R <error>")
//	release R  if it holds the lock: append "R exit <pid>" to the ledger,
//	           Unlock, print "released R"
//
// A winner appends "R enter <pid>" to the ledger as soon as it holds the
// lock; the ledger is opened O_APPEND so lines from processes never mix.
func helperContender() {
	l, err := New(os.Getenv("PIDFILE"), WithWatchInterval(-1))
	if err != nil {
		fmt.Println("err 0", err)
		return
	}
	ledger, err := os.OpenFile(os.Getenv("LEDGER"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		fmt.Println("err 0", err)
		return
	}
	pid := os.Getpid()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		verb, round, _ := strings.Cut(in.Text(), " ")
		switch verb {
		case "go":
			b, err := os.Open(os.Getenv("BARRIER"))
			if err != nil {
				fmt.Println("err", round, err)
				continue
			}
			fmt.Println("ready", round)
			for unix.Flock(int(b.Fd()), unix.LOCK_SH) == unix.EINTR {
			}
			b.Close()
			err = l.TryLock()
			var are *AlreadyRunningError
			switch {
			case err == nil:
				fmt.Fprintf(ledger, "%s enter %d\n", round, pid)
				fmt.Println("won", round)
			case errors.As(err, &are):
				fmt.Println("lost", round, are.Holder.PID)
			default:
				fmt.Println("err", round, strings.ReplaceAll(err.Error(), "\n", " "))
			}
		case "release":
			if _, held := l.Info(); held {
				fmt.Fprintf(ledger, "%s exit %d\n", round, pid)
				l.Unlock()
			}
			fmt.Println("released", round)
		}
	}
}

// Exactly one holder, always: 16 processes released at the same instant
// on one path — absent, left by a SIGKILLed holder, stale JSON, empty,
// garbled, legacy — over many rounds. Exactly one wins each round, every
// loser names the winner, the file names the winner, and the ledger of
// tenures never overlaps.
func TestStressExactlyOneHolder(t *testing.T) {
	procs, rounds := 16, 100
	if testing.Short() {
		procs, rounds = 8, 20
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "data", "backend.pid")
	barrier := filepath.Join(dir, "barrier")
	ledger := filepath.Join(dir, "ledger")
	require.NoError(t, os.WriteFile(barrier, nil, 0o644))
	require.NoError(t, os.WriteFile(ledger, nil, 0o644))
	host, _ := os.Hostname()

	type contender struct {
		in  *os.File
		out *lineReader
		pid int
	}
	cs := make([]*contender, procs)
	for i := range cs {
		cmd := helperCmd(t, "stress-contender", "PIDFILE="+path, "BARRIER="+barrier, "LEDGER="+ledger)
		w, err := cmd.StdinPipe()
		require.NoError(t, err)
		out := newLineReader(t, cmd)
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { w.Close(); cmd.Process.Kill(); cmd.Wait() })
		cs[i] = &contender{in: w.(*os.File), out: out, pid: cmd.Process.Pid}
	}
	bar, err := os.OpenFile(barrier, os.O_RDWR, 0)
	require.NoError(t, err)
	defer bar.Close()

	scenarios := []string{"absent", "killed holder", "dead pid", "empty", "garbled", "legacy dead pid"}
	dead := deadPID(t)
	counts := map[string]int{}
	for r := range rounds {
		scenario := scenarios[r%len(scenarios)]
		counts[scenario]++
		switch scenario {
		case "absent":
			os.Remove(path)
		case "killed holder":
			if r%(5*len(scenarios)) == 1 || testing.Short() {
				startHolder(t, path).kill(t)
			} else {
				writeFile(t, path, lockJSON(t, ProcessLock{PID: dead, Hostname: host, StartToken: "linux:gone:1"}))
			}
		case "dead pid":
			writeFile(t, path, lockJSON(t, ProcessLock{PID: dead, Hostname: host}))
		case "empty":
			writeFile(t, path, "")
		case "garbled":
			writeFile(t, path, "{\"pid\":12\x00\xff")
		case "legacy dead pid":
			writeFile(t, path, strconv.Itoa(dead)+"\n")
		}
		require.NoError(t, unix.Flock(int(bar.Fd()), unix.LOCK_EX))
		for _, c := range cs {
			fmt.Fprintf(c.in, "go %d\n", r)
		}
		for _, c := range cs {
			require.Equal(t, fmt.Sprintf("ready %d", r), c.out.next(30*time.Second))
		}
		time.Sleep(5 * time.Millisecond) // let them all block at the barrier
		require.NoError(t, unix.Flock(int(bar.Fd()), unix.LOCK_UN))

		var winners []int
		var losers []string
		for _, c := range cs {
			line := c.out.next(30 * time.Second)
			switch {
			case line == fmt.Sprintf("won %d", r):
				winners = append(winners, c.pid)
			case strings.HasPrefix(line, fmt.Sprintf("lost %d ", r)):
				losers = append(losers, strings.TrimPrefix(line, fmt.Sprintf("lost %d ", r)))
			default:
				t.Fatalf("round %d (%s): contender %d: %s", r, scenario, c.pid, line)
			}
		}
		require.Len(t, winners, 1, "round %d (%s): winners %v", r, scenario, winners)
		for _, l := range losers {
			require.Equal(t, strconv.Itoa(winners[0]), l, "round %d (%s): a loser names another holder", r, scenario)
		}
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		pl, err := ParseProcessLock(data)
		require.NoError(t, err)
		require.Equal(t, winners[0], pl.PID, "round %d (%s): the file names the winner", r, scenario)
		for _, c := range cs {
			fmt.Fprintf(c.in, "release %d\n", r)
		}
		for _, c := range cs {
			require.Equal(t, fmt.Sprintf("released %d", r), c.out.next(30*time.Second))
		}
	}
	t.Logf("%d processes × %d rounds: %v", procs, rounds, counts)

	// The ledger: every tenure closes before the next one opens.
	data, err := os.ReadFile(ledger)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	require.Len(t, lines, 2*rounds)
	holding := ""
	for i, line := range lines {
		f := strings.Fields(line)
		require.Len(t, f, 3, "ledger line %d: %q", i, line)
		switch f[1] {
		case "enter":
			require.Empty(t, holding, "ledger line %d: %s entered while %s held the lock", i, line, holding)
			holding = f[0] + " " + f[2]
		case "exit":
			require.Equal(t, f[0]+" "+f[2], holding, "ledger line %d", i)
			holding = ""
		}
	}
}
