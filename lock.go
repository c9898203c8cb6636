// Package instancelock guarantees that a single instance of a program runs on
// a host, and shuts it down cleanly.
//
// A backend adds three lines to the top of main:
//
//	lk, err := instancelock.Acquire("./data/backend.pid", instancelock.WithPort(3000))
//	if err != nil { log.Fatal(err) } // errors.Is(err, instancelock.ErrAlreadyRunning)
//	defer lk.Unlock()
//
// The lock is a PID file whose content is a JSON [ProcessLock] (who holds the
// lock: pid, start time, port, Go version, instance id, host) and a kernel
// lock (flock on Unix, LockFileEx on Windows) that the holder keeps for the
// life of its process. When the holder dies, however it dies, the kernel
// drops the lock and the next start takes the file over without any human
// help or age heuristics.
//
// [GracefulShutdown] runs the program's shutdown hooks on SIGTERM or SIGINT
// and releases the lock last; [Health] is an [net/http.Handler] that reports
// the instance's metadata, checks and counters.
//
// Importing the package does nothing: no init function, no signal handler, no
// goroutine. Everything starts when the program calls it.
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
//	{"pid":12345,"startedAt":"2025-11-27T20:00:00.000Z","port":3000,"goVersion":"go1.26.8","instanceId":"…","hostname":"web-1","startToken":"…"}
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
	// Hostname is os.Hostname() of the holder.
	Hostname string
	// StartToken identifies the holder's process beyond its PID: it changes
	// when the PID is reused by a later process (Linux: boot id and start
	// time in clock ticks; macOS: process start time; Windows: creation
	// time). Empty when the platform cannot tell.
	StartToken string
}

// Current returns the ProcessLock that describes the calling process now,
// with a new instance id. port is the port the process will serve on; 0
// means none. It fails only if port is outside 0..65535.
func Current(port int) (ProcessLock, error) {
	pid := os.Getpid()
	host, _ := os.Hostname()
	token, _, _ := processStart(pid)
	pl := ProcessLock{
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
		pl.StartToken == other.StartToken
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
		InstanceID: pl.InstanceID, Hostname: pl.Hostname, StartToken: pl.StartToken}
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
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&w); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidLock, err)
	}
	if dec.More() {
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
	if err != nil {
		return fmt.Errorf("%w: startedAt %q is not an RFC 3339 time", ErrInvalidLock, *w.StartedAt)
	}
	out := ProcessLock{PID: pid, StartedAt: at.UTC(), GoVersion: w.GoVersion,
		InstanceID: w.InstanceID, Hostname: w.Hostname, StartToken: w.StartToken}
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
