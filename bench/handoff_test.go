package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock/internal/proctest"
)

// The holder of a hand-off round is a separate process (the test binary
// re-run as helper "lock-holder"), so that it can be SIGKILLed; for the
// release case it is a separate process too, as it is in production.
func init() { helpers["lock-holder"] = lockHolder }

// lockHolder takes the lock on $BENCH_PATH with $BENCH_IMPL, prints
// "locked" and waits for a line on stdin. On "release" it notes the time,
// releases the lock and prints "released <unix nanoseconds>"; on end of
// input it exits without releasing (the lock then dies with the process).
// It is killed before either in the SIGKILL case.
func lockHolder() {
	h, err := newHandle(os.Getenv(implEnv), os.Getenv(pathEnv))
	if err != nil {
		helperFail("%v", err)
	}
	// The previous holder may still be on its way out: retry for a while.
	for deadline := time.Now().Add(10 * time.Second); ; {
		ok, err := h.try()
		if err != nil {
			helperFail("acquire: %v", err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			helperFail("acquire: still held by another process")
		}
		time.Sleep(time.Millisecond)
	}
	fmt.Println("locked")
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "release" {
		return
	}
	at := time.Now().UnixNano()
	if err := h.release(); err != nil {
		helperFail("release: %v", err)
	}
	fmt.Printf("released %d\n", at)
}

// BenchmarkHandoff measures how long a waiting acquirer takes to get the
// lock once its holder, another process, releases it (case=release) or is
// SIGKILLed (case=kill). Each iteration is one round: start a holder, start
// waiting (instancelock Lock(ctx); gofrs/flock TryLockContext with a 10 ms
// retry delay; flock-blocking, the floor: gofrs/flock Lock, a blocking
// flock(2) that the kernel wakes when the lock is free), let the waiter
// settle for a random 3-13 ms, then release or kill the holder. The latency runs from the holder's clock reading just
// before Unlock (release) or the parent's just before Kill (kill) to the
// waiter's return. ns/op (mostly process start-up) is suppressed; the
// metrics are the median and 95th percentile latency of all rounds.
func BenchmarkHandoff(b *testing.B) {
	for _, fsys := range benchDirs {
		b.Run("fs="+fsys.name, func(b *testing.B) {
			for _, kase := range []string{"release", "kill"} {
				b.Run("case="+kase, func(b *testing.B) {
					for _, impl := range []string{implInstancelock, implGofrs, implBlocking} {
						b.Run("impl="+impl, func(b *testing.B) {
							path := filepath.Join(fsys.dir(b), "handoff.pid")
							w, err := newHandle(impl, path)
							if err != nil {
								b.Fatal(err)
							}
							var lat []time.Duration
							for b.Loop() {
								d, err := handoffRound(w, impl, path, kase == "kill")
								if err != nil {
									b.Fatal(err)
								}
								lat = append(lat, d)
							}
							reportLatency(b, lat)
						})
					}
				})
			}
		})
	}
}

// handoffRound runs one round and returns the hand-off latency.
func handoffRound(w *handle, impl, path string, kill bool) (time.Duration, error) {
	cmd := helperCmd("lock-holder", implEnv+"="+impl, pathEnv+"="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 0, err
	}
	lr, err := proctest.ReadLines(cmd)
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	var reaped chan struct{} // closed once a killed holder is reaped
	defer func() {
		stdin.Close()
		cmd.Process.Kill()
		if reaped != nil {
			<-reaped
		} else {
			cmd.Wait()
		}
	}()
	if _, err := expect(lr, "locked", 10*time.Second); err != nil {
		return 0, err
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type result struct {
		at  time.Time
		err error
	}
	done := make(chan result, 1)
	started := make(chan struct{})
	go func() {
		close(started)
		err := w.wait(ctx)
		done <- result{time.Now(), err}
	}()
	<-started
	// Let the waiter make its first attempt and settle into waiting; the
	// random part spreads the release over gofrs/flock's retry period.
	time.Sleep(3*time.Millisecond + rand.N(10*time.Millisecond))
	select {
	case r := <-done:
		return 0, fmt.Errorf("the waiter returned while the holder held the lock (err=%v)", r.err)
	default:
	}

	var from time.Time
	if kill {
		from = time.Now()
		if err := cmd.Process.Kill(); err != nil {
			return 0, err
		}
		// Reap at once, as init or a supervisor would: until then the
		// holder is a zombie, which kill(pid, 0) reports as alive.
		reaped = make(chan struct{})
		go func() {
			cmd.Wait()
			close(reaped)
		}()
	} else {
		if _, err := io.WriteString(stdin, "release\n"); err != nil {
			return 0, err
		}
		line, err := expect(lr, "released ", 10*time.Second)
		if err != nil {
			return 0, err
		}
		ns, err := strconv.ParseInt(strings.TrimPrefix(line, "released "), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bad line from the holder %q: %v", line, err)
		}
		from = time.Unix(0, ns)
	}
	r := <-done
	if r.err != nil {
		return 0, fmt.Errorf("waiter: %w", r.err)
	}
	if err := w.release(); err != nil {
		return 0, fmt.Errorf("waiter release: %w", err)
	}
	return r.at.Sub(from), nil
}

// reportLatency reports the median and 95th percentile of lat in
// microseconds, and suppresses ns/op.
func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		i := min(len(lat)-1, int(p*float64(len(lat))))
		return float64(lat[i]) / float64(time.Microsecond)
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.95), "p95-µs")
}
