package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Events as go test -json writes them: one package passes with a skipped
// test (and a skipped subtest), one fails.
const events = `{"Action":"start","Package":"ex/a"}
{"Action":"run","Package":"ex/a","Test":"TestOK"}
{"Action":"output","Package":"ex/a","Test":"TestOK","Output":"=== RUN   TestOK\n"}
{"Action":"pass","Package":"ex/a","Test":"TestOK"}
{"Action":"run","Package":"ex/a","Test":"TestServer"}
{"Action":"output","Package":"ex/a","Test":"TestServer","Output":"=== RUN   TestServer\n"}
{"Action":"output","Package":"ex/a","Test":"TestServer","Output":"    a_test.go:9: redis-server is not installed\n"}
{"Action":"output","Package":"ex/a","Test":"TestServer","Output":"--- SKIP: TestServer (0.00s)\n"}
{"Action":"skip","Package":"ex/a","Test":"TestServer"}
{"Action":"output","Package":"ex/a","Test":"TestFifo/fifo","Output":"    a_test.go:20: mkfifo: operation not permitted\n"}
{"Action":"skip","Package":"ex/a","Test":"TestFifo/fifo"}
{"Action":"output","Package":"ex/a","Output":"PASS\n"}
{"Action":"output","Package":"ex/a","Output":"coverage: 50.0% of statements\n"}
{"Action":"output","Package":"ex/a","Output":"ok  \tex/a\t0.010s\n"}
{"Action":"pass","Package":"ex/a"}
{"Action":"run","Package":"ex/b","Test":"TestBad"}
{"Action":"output","Package":"ex/b","Test":"TestBad","Output":"=== RUN   TestBad\n"}
{"Action":"output","Package":"ex/b","Test":"TestBad","Output":"    b_test.go:5: got 1, want 2\n"}
{"Action":"output","Package":"ex/b","Test":"TestBad","Output":"--- FAIL: TestBad (0.00s)\n"}
{"Action":"fail","Package":"ex/b","Test":"TestBad"}
{"Action":"output","Package":"ex/b","Output":"FAIL\tex/b\t0.010s\n"}
{"Action":"fail","Package":"ex/b"}
`

func TestReport(t *testing.T) {
	var out strings.Builder
	if code := report(strings.NewReader(events), &out, nil, false); code != 1 {
		t.Errorf("exit %d with a failed test, want 1", code)
	}
	got := out.String()
	for _, want := range []string{
		"ok  \tex/a\t0.010s\n",
		"--- FAIL: TestBad (ex/b)\n    b_test.go:5: got 1, want 2\n",
		"FAIL\tex/b\t0.010s\n",
		"SKIP ex/a TestServer: a_test.go:9: redis-server is not installed\n",
		"SKIP ex/a TestFifo/fifo: a_test.go:20: mkfifo: operation not permitted\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the report lacks %q:\n%s", want, got)
		}
	}
	for _, noise := range []string{"=== RUN", "PASS\n", "TestOK", "coverage: 50.0%"} {
		if strings.Contains(got, noise) {
			t.Errorf("the report has %q:\n%s", noise, got)
		}
	}
}

func TestReportAllowList(t *testing.T) {
	passing := events[:strings.Index(events, `{"Action":"run","Package":"ex/b"`)]
	list := filepath.Join(t.TempDir(), "skips")
	os.WriteFile(list, []byte("# comment\n\nTestFifo: mkfifo needs a file system that has FIFOs\n"), 0o644)
	allow, err := readAllow(list)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if code := report(strings.NewReader(passing), &out, allow, true); code != 1 {
		t.Errorf("exit %d with a skip not on the list, want 1:\n%s", code, out.String())
	}
	for _, want := range []string{
		"TestServer: a_test.go:9: redis-server is not installed (NOT on the allow-list)",
		"TestFifo/fifo: a_test.go:20: mkfifo: operation not permitted (allowed: mkfifo needs a file system that has FIFOs)",
		"1 skipped tests are not on the allow-list",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the report lacks %q:\n%s", want, out.String())
		}
	}
	allow["TestServer"] = "no Redis on that runner"
	out.Reset()
	if code := report(strings.NewReader(passing), &out, allow, true); code != 0 {
		t.Errorf("exit %d with every skip allowed, want 0:\n%s", code, out.String())
	}
	// Without -allow skips are reported, never fatal.
	if code := report(strings.NewReader(passing), &out, nil, false); code != 0 {
		t.Errorf("exit %d without an allow-list, want 0", code)
	}
	for _, bad := range []string{"TestX", "TestX: ", "Test X: why", "TestX/sub: why"} {
		os.WriteFile(list, []byte(bad+"\n"), 0o644)
		if _, err := readAllow(list); err == nil {
			t.Errorf("allow-list line %q accepted", bad)
		}
	}
	if _, err := readAllow(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing allow-list is accepted")
	}
	// A line that is not an event (go's own message) is passed through.
	out.Reset()
	report(strings.NewReader("go: downloading example.com/x v1.0.0\n"), &out, nil, false)
	if out.String() != "go: downloading example.com/x v1.0.0\n" {
		t.Errorf("non-JSON line: %q", out.String())
	}
}
