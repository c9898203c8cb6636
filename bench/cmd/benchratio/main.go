// Command benchratio reads the output of the bench module's benchmarks
// (go test -bench, any -count) and prints the README's tables: the median
// of every metric over the runs, and instancelock's ratio to each other
// implementation measured in the same run.
//
//	cd bench
//	go test -c -o /tmp/bench.test . &&
//	  for i in $(seq 10); do /tmp/bench.test -test.run '^$' -test.bench 'AcquireRelease|Handoff'; done | tee /tmp/b.txt
//	go run ./cmd/benchratio /tmp/b.txt
//
// With no file argument it reads standard input.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// A result line: name (with its -GOMAXPROCS suffix), iterations, then
// value/unit pairs.
var lineRE = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+(.+)$`)

// samples maps a benchmark name (without the suffix) to unit to values.
type samples map[string]map[string][]float64

func main() {
	in := io.Reader(os.Stdin)
	if len(os.Args) > 1 {
		f, err := os.Open(os.Args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer f.Close()
		in = f
	}
	s, err := parse(in)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if len(s) == 0 {
		fmt.Fprintln(os.Stderr, "benchratio: no benchmark results in the input")
		os.Exit(1)
	}
	printAcquire(os.Stdout, s)
	printHandoff(os.Stdout, s)
}

func parse(r io.Reader) (samples, error) {
	s := samples{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		m := lineRE.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue
		}
		f := strings.Fields(m[2])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			if s[m[1]] == nil {
				s[m[1]] = map[string][]float64{}
			}
			s[m[1]][f[i+1]] = append(s[m[1]][f[i+1]], v)
		}
	}
	return s, sc.Err()
}

// get returns the median and the minimum of a metric and the number of
// runs; ok is false when the benchmark or metric is missing.
func (s samples) get(name, unit string) (med, low float64, n int, ok bool) {
	vs := s[name][unit]
	if len(vs) == 0 {
		return 0, 0, 0, false
	}
	vs = slices.Clone(vs)
	slices.Sort(vs)
	med = vs[len(vs)/2]
	if len(vs)%2 == 0 {
		med = (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
	}
	return med, vs[0], len(vs), true
}

var fileSystems = []string{"tmp", "shm"}

func printAcquire(w io.Writer, s samples) {
	impls := []string{"instancelock", "instancelock-nowatch", "syscalls", "floor", "nightlyone", "gofrs-flock"}
	fmt.Fprintln(w, "Acquire + release: median and minimum over the runs; ratio = instancelock's time ÷ this row's.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| fs | impl | runs | median µs/op | min µs/op | allocs/op | ratio (medians) | ratio (minima) |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|")
	for _, fsys := range fileSystems {
		name := func(impl string) string { return "BenchmarkAcquireRelease/fs=" + fsys + "/impl=" + impl }
		ours, oursLow, _, okOurs := s.get(name("instancelock"), "ns/op")
		for _, impl := range impls {
			ns, low, n, ok := s.get(name(impl), "ns/op")
			if !ok {
				continue
			}
			allocs, _, _, _ := s.get(name(impl), "allocs/op")
			fmt.Fprintf(w, "| %s | %s | %d | %.1f | %.1f | %.0f | %s | %s |\n", fsys, impl, n, ns/1000, low/1000, allocs,
				ratio(ours, ns, okOurs), ratio(oursLow, low, okOurs))
		}
	}
	fmt.Fprintln(w)
}

func printHandoff(w io.Writer, s samples) {
	fmt.Fprintln(w, "Hand-off latency in µs: median over the runs of each run's p50 and p95. gofrs-flock waits with")
	fmt.Fprintln(w, "TryLockContext (10 ms retry delay); flock-blocking is the floor (a blocking flock(2), woken by the kernel).")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| fs | case | runs | instancelock p50 | p95 | gofrs-flock p50 | p95 | flock-blocking p50 | p95 | gofrs ÷ instancelock (p50) |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, fsys := range fileSystems {
		for _, kase := range []string{"release", "kill"} {
			name := func(impl string) string {
				return "BenchmarkHandoff/fs=" + fsys + "/case=" + kase + "/impl=" + impl
			}
			o50, _, n, ok1 := s.get(name("instancelock"), "p50-µs")
			o95, _, _, _ := s.get(name("instancelock"), "p95-µs")
			g50, _, _, ok2 := s.get(name("gofrs-flock"), "p50-µs")
			g95, _, _, _ := s.get(name("gofrs-flock"), "p95-µs")
			f50, _, _, ok3 := s.get(name("flock-blocking"), "p50-µs")
			f95, _, _, _ := s.get(name("flock-blocking"), "p95-µs")
			if !ok1 && !ok2 && !ok3 {
				continue
			}
			fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", fsys, kase, n,
				num(o50, ok1), num(o95, ok1), num(g50, ok2), num(g95, ok2), num(f50, ok3), num(f95, ok3),
				ratio(g50, o50, ok1 && ok2))
		}
	}
	fmt.Fprintln(w)
}

func num(v float64, ok bool) string {
	if !ok {
		return "–"
	}
	return fmt.Sprintf("%.0f", v)
}

func ratio(a, b float64, ok bool) string {
	if !ok || b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}
