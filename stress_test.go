package instancelock

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock/internal/proctest"
	"github.com/stretchr/testify/require"
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
	l, err := newWith(os.Getenv("PIDFILE"), noWatch)
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
			if err := proctest.WaitBarrier(os.Getenv("BARRIER"), func() { fmt.Println("ready", round) }); err != nil {
				fmt.Println("err", round, err)
				continue
			}
			err := l.TryLock()
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
// cut off by a crash, legacy — over many rounds. Exactly one wins each round, every
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
	bar := proctest.NewBarrier(t, barrier)
	ledger := filepath.Join(dir, "ledger")
	require.NoError(t, os.WriteFile(ledger, nil, 0o644))
	host, _ := os.Hostname()

	type contender struct {
		in  io.Writer
		out *proctest.Lines
		pid int
	}
	cs := make([]*contender, procs)
	for i := range cs {
		cmd := helperCmd(t, "stress-contender", "PIDFILE="+path, "BARRIER="+barrier, "LEDGER="+ledger)
		in, out := proctest.Start(t, cmd)
		cs[i] = &contender{in: in, out: out, pid: cmd.Process.Pid}
	}

	scenarios := []string{"absent", "killed holder", "dead pid", "empty", "cut off", "legacy dead pid"}
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
		case "cut off":
			writeFile(t, path, "{\"pid\":12\x00\x00\x00")
		case "legacy dead pid":
			writeFile(t, path, strconv.Itoa(dead)+"\n")
		}
		bar.Hold()
		for _, c := range cs {
			fmt.Fprintf(c.in, "go %d\n", r)
		}
		for _, c := range cs {
			require.Equal(t, fmt.Sprintf("ready %d", r), c.out.Next(30*time.Second))
		}
		bar.Release() // after a pause that lets them all block at the barrier

		var winners []int
		var losers []string
		for _, c := range cs {
			line := c.out.Next(30 * time.Second)
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
			require.Equal(t, fmt.Sprintf("released %d", r), c.out.Next(30*time.Second))
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
