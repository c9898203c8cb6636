package instancelock

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const specJSON = `{"pid":12345,"startedAt":"2025-11-27T20:00:00.000Z","port":3000,"goVersion":"go1.26.8","instanceId":"uuid-here","hostname":"web-1"}`

func TestParseProcessLockRoundTripsTheSpecFormat(t *testing.T) {
	pl, err := ParseProcessLock([]byte(specJSON + "\n"))
	require.NoError(t, err)
	assert.Equal(t, 12345, pl.PID)
	assert.Equal(t, 3000, pl.Port)
	assert.Equal(t, "go1.26.8", pl.GoVersion)
	assert.Equal(t, "uuid-here", pl.InstanceID)
	assert.Equal(t, "web-1", pl.Hostname)
	assert.True(t, pl.StartedAt.Equal(time.Date(2025, 11, 27, 20, 0, 0, 0, time.UTC)))
	out, err := json.Marshal(pl)
	require.NoError(t, err)
	assert.Equal(t, specJSON, string(out))
}

func TestParseProcessLockAcceptsTheLegacyFormat(t *testing.T) {
	for _, in := range []string{"12345\n", "12345", " 12345 \n", "12345\r\n"} {
		pl, err := ParseProcessLock([]byte(in))
		require.NoError(t, err, "%q", in)
		assert.Equal(t, ProcessLock{PID: 12345}, pl, "%q", in)
	}
}

func TestParseProcessLockRejectsBadContent(t *testing.T) {
	cases := map[string]struct{ in, want string }{
		"empty":             {"", "empty"},
		"blank":             {" \n\t", "empty"},
		"binary":            {"\x00\x01\x02\xff", "neither JSON nor a bare PID"},
		"zero pid legacy":   {"0\n", "not positive"},
		"negative legacy":   {"-5\n", "not positive"},
		"two lines":         {"12\n34\n", "neither JSON"},
		"huge legacy":       {"99999999999999999999\n", "not an integer"},
		"bad JSON":          {`{"pid":`, "invalid process lock"},
		"missing pid":       {`{"startedAt":"2025-11-27T20:00:00.000Z"}`, "pid is missing"},
		"missing startedAt": {`{"pid":1}`, "startedAt is missing"},
		"zero pid":          {`{"pid":0,"startedAt":"2025-11-27T20:00:00.000Z"}`, "not positive"},
		"negative pid":      {`{"pid":-1,"startedAt":"2025-11-27T20:00:00.000Z"}`, "not positive"},
		"float pid":         {`{"pid":1.5,"startedAt":"2025-11-27T20:00:00.000Z"}`, "not an integer"},
		"string pid":        {`{"pid":"1","startedAt":"2025-11-27T20:00:00.000Z"}`, "invalid process lock"},
		"port 0":            {`{"pid":1,"startedAt":"2025-11-27T20:00:00.000Z","port":0}`, "outside 1..65535"},
		"port 65536":        {`{"pid":1,"startedAt":"2025-11-27T20:00:00.000Z","port":65536}`, "outside 1..65535"},
		"negative port":     {`{"pid":1,"startedAt":"2025-11-27T20:00:00.000Z","port":-1}`, "outside 1..65535"},
		"bad time":          {`{"pid":1,"startedAt":"yesterday"}`, "not an RFC 3339 time"},
		"number time":       {`{"pid":1,"startedAt":5}`, "invalid process lock"},
		"wrong host type":   {`{"pid":1,"startedAt":"2025-11-27T20:00:00.000Z","hostname":7}`, "invalid process lock"},
		"trailing data":     {`{"pid":1,"startedAt":"2025-11-27T20:00:00.000Z"} {}`, "trailing data"},
		"trailing brackets": {`{"pid":123,"startedAt":"2026-01-01T00:00:00Z"}]]]`, "trailing data"},
		"trailing brace":    {`{"pid":123,"startedAt":"2026-01-01T00:00:00Z"}}`, "trailing data"},
		"trailing NUL":      {`{"pid":123,"startedAt":"2026-01-01T00:00:00Z"}` + "\x00", "trailing data"},
		"array":             {`[1]`, "neither JSON"},
		"too large":         {strings.Repeat(" ", MaxFileSize+1), "over the 65536-byte limit"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ParseProcessLock([]byte(c.in))
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrInvalidLock)
			assert.Contains(t, err.Error(), c.want)
		})
	}
}

func TestParseProcessLockKeepsUnknownFieldsOut(t *testing.T) {
	pl, err := ParseProcessLock([]byte(`{"pid":7,"startedAt":"2025-11-27T20:00:00.123456Z","future":{"x":1}}`))
	require.NoError(t, err)
	assert.Equal(t, 7, pl.PID)
	assert.Equal(t, 123456000, pl.StartedAt.Nanosecond())
}

func TestCurrentDescribesThisProcess(t *testing.T) {
	pl, err := Current(3000)
	require.NoError(t, err)
	assert.Equal(t, os.Getpid(), pl.PID)
	assert.Equal(t, 3000, pl.Port)
	assert.Equal(t, runtime.Version(), pl.GoVersion)
	assert.Len(t, pl.InstanceID, 36)
	host, _ := os.Hostname()
	assert.Equal(t, host, pl.Hostname)
	assert.WithinDuration(t, time.Now(), pl.StartedAt, time.Minute)
	assert.Equal(t, time.UTC, pl.StartedAt.Location())
	if runtime.GOOS == "linux" || runtime.GOOS == "darwin" || runtime.GOOS == "windows" {
		assert.NotEmpty(t, pl.StartToken)
	}
	other, err := Current(3000)
	require.NoError(t, err)
	assert.NotEqual(t, pl.InstanceID, other.InstanceID)

	_, err = Current(70000)
	assert.ErrorIs(t, err, ErrInvalidLock)
	none, err := Current(0)
	require.NoError(t, err)
	out, err := json.Marshal(none)
	require.NoError(t, err)
	assert.NotContains(t, string(out), "port")
}

func TestValidate(t *testing.T) {
	ok := ProcessLock{PID: 1, StartedAt: time.Now()}
	require.NoError(t, ok.Validate())
	for _, bad := range []ProcessLock{
		{PID: 0, StartedAt: time.Now()},
		{PID: -3, StartedAt: time.Now()},
		{PID: 1, StartedAt: time.Now(), Port: 65536},
		{PID: 1, StartedAt: time.Now(), Port: -1},
		{PID: 1},
	} {
		err := bad.Validate()
		assert.ErrorIs(t, err, ErrInvalidLock, "%+v", bad)
		_, err = bad.MarshalJSON()
		assert.ErrorIs(t, err, ErrInvalidLock, "%+v", bad)
	}
}

func TestEqual(t *testing.T) {
	a, err := ParseProcessLock([]byte(specJSON))
	require.NoError(t, err)
	b := a
	b.StartedAt = a.StartedAt.In(time.FixedZone("x", 3600))
	assert.True(t, a.Equal(b), "same instant in another zone")
	for _, change := range []func(*ProcessLock){
		func(p *ProcessLock) { p.PID++ },
		func(p *ProcessLock) { p.Port++ },
		func(p *ProcessLock) { p.StartedAt = p.StartedAt.Add(time.Millisecond) },
		func(p *ProcessLock) { p.GoVersion = "go1" },
		func(p *ProcessLock) { p.InstanceID = "x" },
		func(p *ProcessLock) { p.Hostname = "x" },
		func(p *ProcessLock) { p.StartToken = "x" },
	} {
		c := a
		change(&c)
		assert.False(t, a.Equal(c), "%+v", c)
	}
}

func TestString(t *testing.T) {
	a, err := ParseProcessLock([]byte(specJSON))
	require.NoError(t, err)
	assert.Equal(t, "pid 12345 on web-1, started 2025-11-27T20:00:00.000Z, port 3000", a.String())
	assert.Equal(t, "pid 9", ProcessLock{PID: 9}.String())
}

func TestUnmarshalJSONLeavesTheValueOnError(t *testing.T) {
	pl := ProcessLock{PID: 5}
	err := json.Unmarshal([]byte(`{"pid":0,"startedAt":"2025-11-27T20:00:00.000Z"}`), &pl)
	require.ErrorIs(t, err, ErrInvalidLock)
	assert.Equal(t, 5, pl.PID)
}

// FuzzParseProcessLock: the parser never panics; what it accepts is valid
// (or legacy), and what it accepts as JSON re-encodes to something that
// parses to the same value.
func FuzzParseProcessLock(f *testing.F) {
	for _, s := range []string{specJSON, "12345\n", "", "{}", `{"pid":1,"startedAt":"2025-11-27T20:00:00Z","port":1}`,
		"-1", "\xff\xfe", `{"pid":1,"startedAt":"2026-01-01T00:00:00Z"}]]]`, `{"pid":1,"startedAt":"2026-01-01T00:00:00Z"}}`, `{"pid":1e3,"startedAt":"2025-11-27T20:00:00Z"}`, `{"pid":1,"startedAt":"2025-11-27T20:00:00+02:00"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		pl, err := ParseProcessLock(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidLock) {
				t.Fatalf("error %v does not match ErrInvalidLock", err)
			}
			return
		}
		if pl.PID <= 0 {
			t.Fatalf("accepted pid %d", pl.PID)
		}
		if pl.StartedAt.IsZero() {
			return // legacy
		}
		// One JSON value and nothing after it but whitespace.
		if trimmed := bytes.TrimSpace(data); !json.Valid(trimmed) || trimmed[len(trimmed)-1] != '}' {
			t.Fatalf("accepted %q, which is not one JSON object with only whitespace around it", data)
		}
		out, err := json.Marshal(pl)
		if err != nil {
			t.Fatalf("accepted %q but cannot encode it: %v", data, err)
		}
		again, err := ParseProcessLock(out)
		if err != nil || !again.Equal(pl) {
			t.Fatalf("%q → %s → %+v, %v", data, out, again, err)
		}
		if !bytes.Equal(out, mustMarshal(t, again)) {
			t.Fatalf("encoding is not stable: %s", out)
		}
	})
}

func mustMarshal(t *testing.T, pl ProcessLock) []byte {
	out, err := json.Marshal(pl)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
