package instancelock

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/ad5dec64/instancelock/internal/pidspace"
	"github.com/google/uuid"
)

// MaxFileSize is the largest PID file that is read. A larger file is not a
// PID file and is reported as invalid.
const MaxFileSize = 64 << 10

// timeLayout is RFC 3339 with milliseconds, the format of "startedAt".
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

// ErrInvalidLock is matched by every error about the content of a PID file or
// of a ProcessLock value: errors.Is(err, ErrInvalidLock).
var ErrInvalidLock = errors.New("invalid process lock")

// ProcessLock describes the process that holds (or held) an instance lock.
// It is the content of the PID file, serialised as JSON:
//
//	{"pid":12345,"startedAt":"2025-11-27T20:00:00.000Z","port":3000,"goVersion":"go1.26.8","instanceId":"…","hostname":"web-1","startToken":"…","pidSpace":"…"}
//
// Fields may be added in later versions; none will be removed. The zero
// value is not a valid lock (PID 0).
type ProcessLock struct {
	// PID is the process id of the holder. Always positive.
	PID int
	// StartedAt is when the holder acquired the lock, in UTC with
	// millisecond precision.
	StartedAt time.Time
	// Port is the TCP port the holder serves on, or 0 when none was given.
	Port int
	// GoVersion is runtime.Version() of the holder.
	GoVersion string
	// InstanceID is a random UUID chosen when the lock was created; it tells
	// two runs of the same program apart.
	InstanceID string
	// Hostname is os.Hostname() of the holder. It is shown to people, and
	// trusted to tell machines apart only when PIDSpace is empty: a
	// hostname can change while the holder runs.
	Hostname string
	// StartToken identifies the holder's process beyond its PID: it changes
	// when the PID is reused by a later process (Linux: boot id and start
	// time in clock ticks; macOS: process start time; Windows: creation
	// time). Empty when the platform cannot tell.
	StartToken string
	// PIDSpace identifies the space of process ids the holder's PID
	// belongs to: one boot of one machine and, on Linux, one PID
	// namespace, as "<os>:<boot>:<namespace>:<machine>" (see Local).
	// Empty in files written before it existed and where the platform
	// cannot tell.
	PIDSpace string
}

// Current returns the ProcessLock that describes the calling process now,
// with a new instance id. port is the port the process will serve on; 0
// means none. It fails only if port is outside 0..65535.
func Current(port int) (ProcessLock, error) {
	pid := os.Getpid()
	host, _ := os.Hostname()
	token, _, _ := processStart(pid)
	pl := ProcessLock{
		PIDSpace:   thisPIDSpace(),
		PID:        pid,
		StartedAt:  time.Now().UTC().Truncate(time.Millisecond),
		Port:       port,
		GoVersion:  runtime.Version(),
		InstanceID: uuid.NewString(),
		Hostname:   host,
		StartToken: token,
	}
	if err := pl.Validate(); err != nil {
		return ProcessLock{}, err
	}
	return pl, nil
}

// Validate reports whether the lock is well formed: a positive PID, a port
// in 1..65535 or 0 for none, a non-zero start time. The error matches
// ErrInvalidLock.
func (pl ProcessLock) Validate() error {
	switch {
	case pl.PID <= 0:
		return fmt.Errorf("%w: pid %d is not positive", ErrInvalidLock, pl.PID)
	case pl.Port < 0 || pl.Port > 65535:
		return fmt.Errorf("%w: port %d is outside 1..65535", ErrInvalidLock, pl.Port)
	case pl.StartedAt.IsZero():
		return fmt.Errorf("%w: startedAt is missing", ErrInvalidLock)
	}
	return nil
}

// Equal reports whether pl and other describe the same lock: every field is
// equal, start times compared as instants.
func (pl ProcessLock) Equal(other ProcessLock) bool {
	return pl.PID == other.PID &&
		pl.StartedAt.Equal(other.StartedAt) &&
		pl.Port == other.Port &&
		pl.GoVersion == other.GoVersion &&
		pl.InstanceID == other.InstanceID &&
		pl.Hostname == other.Hostname &&
		pl.StartToken == other.StartToken &&
		pl.PIDSpace == other.PIDSpace
}

// Local reports whether pl's PID can be checked from here. When pl records
// a PIDSpace (and this platform can tell its own), it is decided by the
// machine's identity, whatever the hostnames say: pl is local when it was
// written in the calling process's PID space (the same boot of the same
// machine and, on Linux, the same PID namespace), or on an earlier boot of
// this machine (its process is gone: the start token, which carries the
// boot, never matches a process of this boot). Otherwise (files written
// before PIDSpace existed) pl is local when its Hostname is empty or
// equals this host's name.
func (pl ProcessLock) Local() bool {
	host, _ := os.Hostname()
	return sameSpace(pl, thisPIDSpace(), host)
}

// sameSpace is Local against the given identity of this process.
func sameSpace(pl ProcessLock, space, host string) bool {
	if pl.PIDSpace != "" && space != "" {
		if pl.PIDSpace == space {
			return true
		}
		a, okA := pidspace.Parse(pl.PIDSpace)
		b, okB := pidspace.Parse(space)
		return okA && okB && a.EarlierBoot(b)
	}
	return pl.Hostname == "" || pl.Hostname == host
}

// String returns a one-line description such as
// "pid 12345 on web-1, started 2025-11-27T20:00:00.000Z, port 3000".
func (pl ProcessLock) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "pid %d", pl.PID)
	if pl.Hostname != "" {
		fmt.Fprintf(&b, " on %s", pl.Hostname)
	}
	if !pl.StartedAt.IsZero() {
		fmt.Fprintf(&b, ", started %s", pl.StartedAt.UTC().Format(timeLayout))
	}
	if pl.Port != 0 {
		fmt.Fprintf(&b, ", port %d", pl.Port)
	}
	return b.String()
}

// wireLock is the JSON form. Field order is the documented order.
type wireLock struct {
	PID        *json.Number `json:"pid"`
	StartedAt  *string      `json:"startedAt"`
	Port       *json.Number `json:"port,omitempty"`
	GoVersion  string       `json:"goVersion,omitempty"`
	InstanceID string       `json:"instanceId,omitempty"`
	Hostname   string       `json:"hostname,omitempty"`
	StartToken string       `json:"startToken,omitempty"`
	PIDSpace   string       `json:"pidSpace,omitempty"`
}

// MarshalJSON encodes pl in the PID file format. It fails if pl is not
// valid.
func (pl ProcessLock) MarshalJSON() ([]byte, error) {
	if err := pl.Validate(); err != nil {
		return nil, err
	}
	pid := json.Number(strconv.Itoa(pl.PID))
	at := pl.StartedAt.UTC().Format(timeLayout)
	w := wireLock{PID: &pid, StartedAt: &at, GoVersion: pl.GoVersion,
		InstanceID: pl.InstanceID, Hostname: pl.Hostname, StartToken: pl.StartToken, PIDSpace: pl.PIDSpace}
	if pl.Port != 0 {
		port := json.Number(strconv.Itoa(pl.Port))
		w.Port = &port
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes the PID file's JSON format. pid and startedAt are
// required; unknown fields are ignored. Errors match ErrInvalidLock.
func (pl *ProcessLock) UnmarshalJSON(data []byte) error {
	var w struct {
		PID        json.RawMessage `json:"pid"`
		StartedAt  *string         `json:"startedAt"`
		Port       json.RawMessage `json:"port"`
		GoVersion  string          `json:"goVersion"`
		InstanceID string          `json:"instanceId"`
		Hostname   string          `json:"hostname"`
		StartToken string          `json:"startToken"`
		PIDSpace   string          `json:"pidSpace"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&w); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidLock, err)
	}
	if rest := bytes.TrimLeft(data[dec.InputOffset():], " \t\r\n"); len(rest) > 0 {
		return fmt.Errorf("%w: trailing data after the JSON object", ErrInvalidLock)
	}
	if w.PID == nil {
		return fmt.Errorf("%w: field pid is missing", ErrInvalidLock)
	}
	if w.StartedAt == nil {
		return fmt.Errorf("%w: field startedAt is missing", ErrInvalidLock)
	}
	pid, err := parseInt("pid", string(w.PID))
	if err != nil {
		return err
	}
	at, err := time.Parse(time.RFC3339Nano, *w.StartedAt)
	if y := at.UTC().Year(); err == nil && (y < 1 || y > 9999) {
		err = errors.New("outside years 1..9999")
	}
	if err != nil {
		return fmt.Errorf("%w: startedAt %q is not an RFC 3339 time", ErrInvalidLock, *w.StartedAt)
	}
	out := ProcessLock{PID: pid, StartedAt: at.UTC(), GoVersion: w.GoVersion,
		InstanceID: w.InstanceID, Hostname: w.Hostname, StartToken: w.StartToken, PIDSpace: w.PIDSpace}
	if w.Port != nil {
		if out.Port, err = parseInt("port", string(w.Port)); err != nil {
			return err
		}
		if out.Port == 0 {
			return fmt.Errorf("%w: port 0 is outside 1..65535", ErrInvalidLock)
		}
	}
	if err := out.Validate(); err != nil {
		return err
	}
	*pl = out
	return nil
}

func parseInt(field, s string) (int, error) {
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%w: %s %s is not an integer in range", ErrInvalidLock, field, s)
	}
	return int(n), nil
}

// ParseProcessLock parses the content of a PID file: the JSON format written
// by this package, or the legacy format of a bare decimal PID on one line
// ("12345\n"), which yields a ProcessLock with only PID set (StartedAt is
// zero). Anything else — empty or binary content, a non-positive PID, a port
// outside 1..65535, wrong types, content over MaxFileSize — is an error that
// matches ErrInvalidLock. It never panics.
func ParseProcessLock(data []byte) (ProcessLock, error) {
	if len(data) > MaxFileSize {
		return ProcessLock{}, fmt.Errorf("%w: %d bytes is over the %d-byte limit", ErrInvalidLock, len(data), MaxFileSize)
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return ProcessLock{}, fmt.Errorf("%w: empty", ErrInvalidLock)
	}
	if trimmed[0] == '{' {
		var pl ProcessLock
		if err := pl.UnmarshalJSON(trimmed); err != nil {
			return ProcessLock{}, err
		}
		return pl, nil
	}
	if !isLegacy(data) {
		return ProcessLock{}, fmt.Errorf("%w: neither JSON nor a bare PID line", ErrInvalidLock)
	}
	pid, err := parseInt("pid", string(trimmed))
	if err != nil {
		return ProcessLock{}, err
	}
	if pid <= 0 {
		return ProcessLock{}, fmt.Errorf("%w: pid %d is not positive", ErrInvalidLock, pid)
	}
	return ProcessLock{PID: pid}, nil
}

// isLegacy reports whether data is optional blanks, decimal digits (with an
// optional sign, so that "-5" is reported as non-positive), optional blanks
// and at most one trailing newline.
func isLegacy(data []byte) bool {
	s := strings.TrimRight(string(data), " \t\r\n")
	s = strings.TrimLeft(s, " \t")
	if strings.Count(string(data), "\n") > 1 {
		return false
	}
	s = strings.TrimPrefix(strings.TrimPrefix(s, "-"), "+")
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// contentKind is the verdict of classify on what a file at the PID file's
// path contains.
type contentKind int

const (
	// contentLock: a complete PID file that ParseProcessLock accepts.
	contentLock contentKind = iota
	// contentRemnant: what a crash or a power loss leaves of a PID file:
	// nothing, only NUL bytes and whitespace, or a cut-off prefix of a PID
	// file in either format, possibly followed by NUL bytes and whitespace.
	// A remnant that no process locks is stale.
	contentRemnant
	// contentForeign: anything else, including content over MaxFileSize.
	// It is someone's file: it is never replaced or removed.
	contentForeign
)

// lockKeys are the fields of the JSON format, with whether the value is a
// number (else a string).
var lockKeys = map[string]bool{
	"pid": true, "startedAt": false, "port": true, "goVersion": false,
	"instanceId": false, "hostname": false, "startToken": false, "pidSpace": false,
}

// classify is the one rule that decides whether content found at a PID
// file's path is a PID file, a crash remnant, or someone's file (see
// contentKind). For contentLock it returns the parsed lock. It never
// panics and reads nothing but data.
func classify(data []byte) (ProcessLock, contentKind) {
	if len(data) > MaxFileSize {
		return ProcessLock{}, contentForeign
	}
	if pl, err := ParseProcessLock(data); err == nil {
		return pl, contentLock
	}
	t := bytes.TrimRight(data, " \t\r\n\x00")
	t = bytes.TrimLeft(t, " \t\r\n")
	switch {
	case len(t) == 0:
		return ProcessLock{}, contentRemnant
	case t[0] == '{':
		switch jsonPrefix(t) {
		case prefixCut:
			return ProcessLock{}, contentRemnant
		case prefixWhole:
			// A complete PID file followed by NULs (the file was longer).
			if _, err := ParseProcessLock(t); err == nil {
				return ProcessLock{}, contentRemnant
			}
		}
		return ProcessLock{}, contentForeign
	case legacyPrefix(t):
		return ProcessLock{}, contentRemnant
	}
	return ProcessLock{}, contentForeign
}

// legacyPrefix reports whether t is a cut-off legacy PID: decimal digits
// only, no more than a PID can have, not beginning with 0 (no PID file this package writes
// does, so "0" or "00" is someone's counter, not a cut-off PID).
func legacyPrefix(t []byte) bool {
	if len(t) == 0 || t[0] == '0' || len(t) > 10 {
		return false
	}
	for _, c := range t {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

type prefixVerdict int

const (
	prefixNo    prefixVerdict = iota // not the start of a PID file in JSON
	prefixCut                        // ends inside a PID file's object
	prefixWhole                      // one complete object, nothing after it
)

// jsonPrefix scans t as the start of a JSON object whose members are the
// fields of the PID file format (lockKeys), numbers for number fields and
// strings for the others, with optional whitespace between tokens.
func jsonPrefix(t []byte) prefixVerdict {
	i := 0
	ws := func() {
		for i < len(t) && (t[i] == ' ' || t[i] == '\t' || t[i] == '\r' || t[i] == '\n') {
			i++
		}
	}
	// str scans a string from its opening quote; it returns the content
	// and whether it was closed, or ok=false on a byte a string cannot
	// hold there.
	str := func() (content string, closed, ok bool) {
		start := i + 1
		for i++; i < len(t); i++ {
			switch c := t[i]; {
			case c == '"':
				i++
				return string(t[start : i-1]), true, true
			case c < 0x20:
				return "", false, false
			case c == '\\':
				i++
				if i == len(t) {
					return "", false, true
				}
				switch t[i] {
				case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				case 'u':
					for k := 0; k < 4; k++ {
						i++
						if i == len(t) {
							return "", false, true
						}
						if !isHex(t[i]) {
							return "", false, false
						}
					}
				default:
					return "", false, false
				}
			}
		}
		return "", false, true
	}
	i++ // '{'
	for first := true; ; first = false {
		ws()
		if i == len(t) {
			return prefixCut
		}
		if t[i] == '}' {
			if !first {
				return prefixNo // a comma was followed by '}'
			}
			break
		}
		if t[i] != '"' {
			return prefixNo
		}
		keyStart := i + 1
		key, closed, ok := str()
		if !ok {
			return prefixNo
		}
		if !closed {
			// A cut-off key must be the start of a known one.
			for k := range lockKeys {
				if strings.HasPrefix(k, string(t[keyStart:])) {
					return prefixCut
				}
			}
			return prefixNo
		}
		number, known := lockKeys[key]
		if !known {
			return prefixNo
		}
		ws()
		if i == len(t) {
			return prefixCut
		}
		if t[i] != ':' {
			return prefixNo
		}
		i++
		ws()
		if i == len(t) {
			return prefixCut
		}
		if number {
			start := i
			for i < len(t) && '0' <= t[i] && t[i] <= '9' {
				i++
			}
			if i == start {
				return prefixNo
			}
		} else {
			if t[i] != '"' {
				return prefixNo
			}
			if _, closed, ok := str(); !ok {
				return prefixNo
			} else if !closed {
				return prefixCut
			}
		}
		ws()
		if i == len(t) {
			return prefixCut
		}
		if t[i] == '}' {
			break
		}
		if t[i] != ',' {
			return prefixNo
		}
		i++
	}
	i++ // '}'
	if i != len(t) {
		return prefixNo
	}
	return prefixWhole
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
