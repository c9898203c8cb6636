// Command testreport reads the output of go test -json on standard input
// and prints what a person needs from it: each package's result line, the
// whole output of every failed test, and every skipped test with its
// reason. scripts/test pipes each suite through it.
//
//	go test -json ./... | testreport [-allow FILE]
//
// With -allow, a skip is an error unless the allow-list names the test.
// The list has one entry a line, "TestName: why it may skip here" (the
// top-level test name; its subtests are covered too); blank lines and
// lines starting with # are ignored. scripts/test passes the list under
// CI=true, so that a test that silently stopped running fails CI.
//
// It exits 1 if a test or a build failed, or a skip was not allowed; 2 on
// bad input.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// event is one line of go test -json (cmd/test2json).
type event struct {
	Action     string
	Package    string
	Test       string
	Output     string
	ImportPath string // of build-output and build-fail
}

// skip is one skipped test and why.
type skip struct {
	pkg, test, reason string
}

func main() {
	allowFile := flag.String("allow", "", "the allow-list `file` of tests that may skip; without it, skips are only reported")
	flag.Parse()
	var allow map[string]string
	if *allowFile != "" {
		var err error
		if allow, err = readAllow(*allowFile); err != nil {
			fmt.Fprintln(os.Stderr, "testreport:", err)
			os.Exit(2)
		}
	}
	os.Exit(report(os.Stdin, os.Stdout, allow, *allowFile != ""))
}

// readAllow reads the allow-list: test name → reason.
func readAllow(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	allow := map[string]string{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, why, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(why) == "" || strings.ContainsAny(strings.TrimSpace(name), " \t/") {
			return nil, fmt.Errorf("%s:%d: want \"TestName: why it may skip\", got %q", path, i+1, line)
		}
		allow[strings.TrimSpace(name)] = strings.TrimSpace(why)
	}
	return allow, nil
}

// report prints the summary of the events read from r and returns the exit
// code.
func report(r io.Reader, w io.Writer, allow map[string]string, strict bool) int {
	outputs := map[string]*strings.Builder{} // by package + "\x00" + test
	var skips []skip
	failed := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if err := json.Unmarshal(line, &e); err != nil || e.Action == "" {
			fmt.Fprintf(w, "%s\n", line) // not an event: go's own message
			continue
		}
		key := e.Package + "\x00" + e.Test
		switch e.Action {
		case "build-output":
			fmt.Fprint(w, e.Output)
		case "build-fail":
			failed = true
		case "output":
			if e.Test == "" {
				if keepPackageLine(e.Output) {
					fmt.Fprint(w, e.Output)
				}
				continue
			}
			b := outputs[key]
			if b == nil {
				b = &strings.Builder{}
				outputs[key] = b
			}
			b.WriteString(e.Output)
		case "fail":
			if e.Test != "" {
				fmt.Fprintf(w, "--- FAIL: %s (%s)\n%s", e.Test, e.Package, indentOutput(outputs[key]))
			}
			failed = true
			delete(outputs, key)
		case "skip":
			if e.Test != "" {
				skips = append(skips, skip{e.Package, e.Test, skipReason(outputs[key])})
			}
			delete(outputs, key)
		case "pass":
			delete(outputs, key)
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(w, "testreport: reading go test -json:", err)
		return 2
	}
	sort.Slice(skips, func(i, j int) bool {
		return skips[i].pkg+" "+skips[i].test < skips[j].pkg+" "+skips[j].test
	})
	bad := 0
	for _, s := range skips {
		top, _, _ := strings.Cut(s.test, "/")
		note := ""
		if strict {
			if why, ok := allow[top]; ok {
				note = " (allowed: " + why + ")"
			} else {
				note = " (NOT on the allow-list)"
				bad++
			}
		}
		fmt.Fprintf(w, "SKIP %s %s: %s%s\n", s.pkg, s.test, s.reason, note)
	}
	if bad > 0 {
		fmt.Fprintf(w, "%d skipped tests are not on the allow-list: make them run, or add them with their reason\n", bad)
	}
	if failed || bad > 0 {
		return 1
	}
	return 0
}

// keepPackageLine reports whether a package-level output line is worth
// printing: the result lines ("ok …", "FAIL …", "--- FAIL") and anything
// that is not go test's own "PASS", "=== RUN" or lone "coverage:" line.
func keepPackageLine(s string) bool {
	t := strings.TrimSpace(s)
	// "coverage: …" alone repeats what the package's "ok" line says.
	return t != "" && t != "PASS" && !strings.HasPrefix(t, "=== ") && !strings.HasPrefix(t, "coverage: ")
}

// skipReason returns the reason a test logged before it skipped: its
// output without the "=== RUN"/"--- SKIP" lines, on one line.
func skipReason(b *strings.Builder) string {
	if b == nil {
		return "(no reason given)"
	}
	var parts []string
	for _, l := range strings.Split(b.String(), "\n") {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- SKIP") {
			continue
		}
		parts = append(parts, t)
	}
	if len(parts) == 0 {
		return "(no reason given)"
	}
	return strings.Join(parts, " | ")
}

// indentOutput returns a failed test's output, without the "=== RUN" lines.
func indentOutput(b *strings.Builder) string {
	if b == nil {
		return ""
	}
	var out strings.Builder
	for _, l := range strings.SplitAfter(b.String(), "\n") {
		if t := strings.TrimSpace(l); t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- FAIL") {
			continue
		}
		out.WriteString(l)
	}
	return out.String()
}
