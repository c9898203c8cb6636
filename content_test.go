package instancelock

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// foreignSamples are contents that are someone's file: never a PID file,
// never what a crash leaves of one.
var foreignSamples = []string{
	"notes\n",
	"SQLite format 3\x00\x10\x00\x02\x02\x00@  \x00\x00\x00\x01",
	"[server]\nport = 3000\n",
	`{"name":"backend","version":"1.0.0"`,
	`{"pid":1}`,
	`{"pid":"1","startedAt":"2026-01-01T00:00:00Z"}`,
	`{"pid":12,"startedAt":"2026-01-01T00:00:00Z"}]]]`,
	`{"pid":12,"startedAt":"2026-01-01T00:00:00Z"}}`,
	"12\n34\n",
	"-5\n",
	"\x00\x17garbage{",
	"{\"pid\":12\x00\xff",
	"#!/bin/sh\nexec backend\n",
	"12345678901234567890\n",
	"\xef\xbb\xbf12\n",
	"0", "0\n", "00", "0\x00\x00", // a PID never begins with 0: a counter, not a cut-off PID
	strings.Repeat(" ", MaxFileSize+1),
}

// remnantSamples are what a crash or power loss leaves of a PID file.
var remnantSamples = []string{
	"", "\n", " \t\r\n", strings.Repeat("\x00", 97), "\x00\n\x00 ",
	"{", `{"`, `{"pi`, `{"pid":`, `{"pid":123`, `{"pid":123,"startedAt":"2026-01-01T`,
	`{"pid":123,"startedAt":"2026-01-01T00:00:00.000Z","hostname":"a\u00`,
	`{"pid":123,"startedAt":"2026-01-01T00:00:00.000Z","hostname":"web 1`,
	`{"pid":123,"startedAt":"2026-01-0` + strings.Repeat("\x00", 40),
	`{"pid":123,"startedAt":"2026-01-01T00:00:00.000Z"}` + "\n\x00\x00",
	"123\x00\x00\x00", "123\n\x00",
}

func TestClassifyTheListedInputs(t *testing.T) {
	for _, s := range foreignSamples {
		_, kind := classify([]byte(s))
		assert.Equal(t, contentForeign, kind, "%q is someone's file", s)
	}
	for _, s := range remnantSamples {
		_, kind := classify([]byte(s))
		assert.Equal(t, contentRemnant, kind, "%q is a crash remnant", s)
	}
	pl, kind := classify([]byte(specJSON + "\n"))
	assert.Equal(t, contentLock, kind)
	assert.Equal(t, 12345, pl.PID)
}

// FuzzClassify checks the whole contract of classify: every prefix of
// every encoding of a valid lock, in either format, possibly padded with
// NUL bytes and whitespace, is a remnant or a lock, never foreign; content
// whose first significant byte cannot begin a PID file is foreign, and so
// is anything over MaxFileSize; what it calls a lock is what
// ParseProcessLock accepts.
func FuzzClassify(f *testing.F) {
	for _, s := range append(append([]string{specJSON}, foreignSamples[:len(foreignSamples)-1]...), remnantSamples...) {
		f.Add([]byte(s), 4242, uint16(3000), "web-1", "linux:x:1", uint8(3))
	}
	f.Fuzz(func(t *testing.T, data []byte, pid int, port uint16, host, token string, pad uint8) {
		// Arbitrary content.
		pl, kind := classify(data)
		parsed, perr := ParseProcessLock(data)
		switch {
		case perr == nil:
			if kind != contentLock || !pl.Equal(parsed) {
				t.Fatalf("%q parses but is classified %d", data, kind)
			}
		case kind == contentLock:
			t.Fatalf("%q is classified a lock but does not parse: %v", data, perr)
		}
		sig := bytes.TrimLeft(bytes.TrimRight(data, " \t\r\n\x00"), " \t\r\n")
		if len(sig) > 0 && sig[0] != '{' && (sig[0] < '0' || sig[0] > '9') && kind != contentForeign {
			t.Fatalf("%q cannot begin a PID file, yet it is classified %d", data, kind)
		}
		if kind == contentRemnant && len(sig) > 0 && sig[0] == '{' && bytes.IndexByte(sig, '}') >= 0 && bytes.IndexByte(sig, '}') != len(sig)-1 {
			t.Fatalf("%q has content after its object, yet it is a remnant", data)
		}

		// Every prefix of a valid lock's encodings, padded.
		if pid <= 0 {
			pid = -pid%1_000_000 + 1
		}
		lk := ProcessLock{PID: pid, StartedAt: time.Unix(1_700_000_000, 0).UTC(), Port: int(port),
			GoVersion: "go1.26", InstanceID: "id", Hostname: host, StartToken: token, PIDSpace: token}
		enc, err := lk.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		padding := []string{"", "\n", "\x00", "\n\x00\x00\x00", " \x00\t\x00"}[int(pad)%5]
		for _, whole := range [][]byte{append(enc, '\n'), []byte(strconv.Itoa(pid) + "\n")} {
			for i := 0; i <= len(whole); i++ {
				in := append(bytes.Clone(whole[:i]), padding...)
				if _, kind := classify(in); kind == contentForeign {
					t.Fatalf("prefix %q of %q is classified foreign", in, whole)
				}
			}
		}
		if _, kind := classify(append(bytes.Repeat([]byte{' '}, MaxFileSize), enc...)); kind != contentForeign {
			t.Fatalf("content over MaxFileSize is classified %d", kind)
		}
	})
}
