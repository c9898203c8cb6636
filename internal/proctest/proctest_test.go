package proctest

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

const helperEnv = "PROCTEST_HELPER"

var helpers = map[string]func(){
	// waiter says hello, then waits at the barrier BARRIER once per line on
	// stdin, saying "ready" before and "through" after each wait.
	"waiter": func() {
		fmt.Println("hello", os.Getenv("WHO"))
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			if err := WaitBarrier(os.Getenv("BARRIER"), func() { fmt.Println("ready") }); err != nil {
				fmt.Println("err", err)
				continue
			}
			fmt.Println("through")
		}
	},
}

func TestMain(m *testing.M) {
	RunHelper(helperEnv, helpers)
	os.Exit(m.Run())
}

// A helper started by Command runs with its environment, Lines reads what
// it says, and it does not pass a held Barrier until Release.
func TestHelperAndBarrier(t *testing.T) {
	path := filepath.Join(t.TempDir(), "barrier")
	bar := NewBarrier(t, path)
	var ins []*os.File
	var outs []*Lines
	for i := range 3 {
		cmd := Command(helperEnv, "waiter", fmt.Sprintf("WHO=%d", i), "BARRIER="+path)
		w, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out := NewLines(t, cmd)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Close(); cmd.Wait() })
		if got, want := out.Next(10*time.Second), fmt.Sprint("hello ", i); got != want {
			t.Fatalf("helper %d said %q; want %q", i, got, want)
		}
		ins, outs = append(ins, w.(*os.File)), append(outs, out)
	}
	for range 2 {
		bar.Hold()
		for _, w := range ins {
			fmt.Fprintln(w, "go")
		}
		for _, out := range outs {
			out.Expect("ready", 10*time.Second)
		}
		for _, out := range outs {
			if s, err := out.Line(100 * time.Millisecond); err == nil {
				t.Fatalf("a helper said %q at a held barrier", s)
			}
		}
		bar.Release()
		for _, out := range outs {
			if got := out.Next(10 * time.Second); got != "through" {
				t.Fatalf("after Release a helper said %q; want \"through\"", got)
			}
		}
	}
	for _, w := range ins {
		w.Close()
	}
	for _, out := range outs {
		if s, err := out.Line(10 * time.Second); err != ErrClosed {
			t.Fatalf("after its stdin closed a helper said %q, %v; want ErrClosed", s, err)
		}
	}
}
