package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/ad5dec64/instancelock"
)

// LSB init-script status codes.
const (
	statusRunning = 0 // the holder is alive and holds the lock
	statusStale   = 1 // the PID file exists but nothing holds the lock
	statusAbsent  = 3 // no PID file
	statusUnknown = 4 // cannot tell: unreadable, not a PID file, other host
)

const statusUsage = `Usage: instancelock status [-json] PIDFILE

Prints who holds the lock of PIDFILE: pid, start time, uptime, port, host,
instance id, whether the process is alive and whether the lock is held. A
file written in another PID namespace (a container) of this boot is judged
by the kernel's lock like any other: running while held, stale once free.

Exit codes (LSB init-script convention):
  0  running: a live process holds the lock
  1  stale: the PID file exists but nothing holds the lock (its process is
     dead, its PID now belongs to another program, or the file is a copy),
     or it holds what a crash leaves of a PID file (empty, NUL bytes, cut
     off); the next start takes it over
  3  not running: there is no PID file
  4  unknown: the file cannot be read, is not a PID file (someone's data:
     run refuses it), or was written on another machine or boot and its
     lock is not seen held (a holder there would not show), or is a bare PID
     naming a live process that takes no lock (another tool's file: starts
     refuse it while that process lives), or nothing holds it but starts
     refuse it (shared locks on it while another user's socket has the
     lock's name: the message names both); also bad usage, an empty PIDFILE
     (an unset shell variable) included

Flags:
  -json   print one JSON object: the PID file's fields (pid, startedAt, port,
          goVersion, instanceId, hostname, startToken, pidSpace) plus path,
          status ("running", "stale", "not running", "unknown"), alive,
          stale, uptimeSeconds and error

Examples:
  instancelock status data/backend.pid
  instancelock status -json /run/backend/backend.pid | jq .uptimeSeconds
  if instancelock status /run/job.pid >/dev/null; then echo running; fi
`

// statusReport is what status found. Its JSON form is the -json output.
type statusReport struct {
	Path   string `json:"path"`
	Status string `json:"status"`

	// The PID file's fields, named as in the file.
	PID        int    `json:"pid,omitempty"`
	StartedAt  string `json:"startedAt,omitempty"`
	Port       int    `json:"port,omitempty"`
	GoVersion  string `json:"goVersion,omitempty"`
	InstanceID string `json:"instanceId,omitempty"`
	Hostname   string `json:"hostname,omitempty"`
	StartToken string `json:"startToken,omitempty"`
	PIDSpace   string `json:"pidSpace,omitempty"`

	UptimeSeconds float64 `json:"uptimeSeconds,omitempty"`
	Alive         bool    `json:"alive"` // the process holds the lock, or (status 4) is alive and makes starts refuse
	Stale         bool    `json:"stale"` // the file exists but nothing holds the lock
	Error         string  `json:"error,omitempty"`

	code    int
	locked  bool   // a live process holds the lock (Locker.Running)
	where   string // for the text form: where PID is a pid, when not here
	process string // what is known of the process, for the text form
	reason  string // one line: why the status is unknown
}

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("status")
	asJSON := fs.Bool("json", false, "")
	pos, code, ok := parse(fs, args, true, stdout, stderr, statusUnknown)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "instancelock status: want exactly one PIDFILE argument, got %d (see instancelock status -h)\n", len(pos))
		return statusUnknown
	}
	if msg := blankPath("status", "the PIDFILE argument", pos[0], "give the PID file's path (see instancelock status -h)"); msg != "" {
		fmt.Fprintln(stderr, msg)
		return statusUnknown
	}
	r := status(pos[0], time.Now())
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(r)
	} else {
		r.writeText(stdout)
	}
	if r.code == statusUnknown {
		fmt.Fprintf(stderr, "instancelock status: %s\n", r.reason)
	}
	return r.code
}

// status inspects the PID file at path. It never changes anything.
func status(path string, now time.Time) *statusReport {
	r := &statusReport{Path: path}
	l, err := instancelock.New(path)
	if err != nil {
		return r.unknown(err.Error())
	}
	h, err := l.Holder()
	switch {
	case errors.Is(err, instancelock.ErrNotRunning):
		if perr := parentNotDir(path); perr != nil {
			return r.unknown(perr.Error())
		}
		// No file; on Linux a live holder may still hold the lock (its
		// socket names it) while its file was removed.
		if cur, running, err := l.Running(); err == nil && running {
			r.setHolder(cur, now)
			r.locked, r.Alive, r.process = true, true, "is alive (its PID file is missing: it puts it back)"
			r.code, r.Status = statusRunning, "running"
			return r
		}
		r.code, r.Status = statusAbsent, "not running"
		return r
	case errors.Is(err, instancelock.ErrForeignFile):
		return r.unknown(fmt.Sprintf("%s: %s", path, pathErr(path, err))) // says "not a PID file"
	case errors.Is(err, instancelock.ErrInvalidLock):
		return r.remnant(l)
	case err != nil:
		return r.unknown(fmt.Sprintf("cannot read %s: %s", path, pathErr(path, err)))
	}
	r.setHolder(h, now)
	// The library's one judgement (the one TryLock uses): who holds the
	// lock, whether the file is stale, or whether starts refuse it. For a
	// file of another PID namespace of this boot it is the kernel's
	// answer, held or free; for one of another machine or boot only a lock
	// seen held says anything (a holder there would not show here).
	from := originOf(h)
	cur, running, err := l.Running()
	var are *instancelock.AlreadyRunningError
	switch {
	case errors.As(err, &are) && are.Unlocked:
		r.Alive, r.process = true, "is alive but does not hold the lock: "+are.Reason
		return r.unknown(blockedAdvice(path, are))
	case errors.Is(err, instancelock.ErrWouldBlock):
		return r.refused(err)
	case err != nil:
		return r.unknown(fmt.Sprintf("cannot tell whether %s is held: %s", path, pathErr(path, err)))
	case from == originElsewhere && !running:
		return r.unknown(fmt.Sprintf("%s was written %s: its lock looks free here, but a holder there would not show; pid %d cannot be checked from here", path, whereWritten(h), h.PID))
	}
	if running && from != originHere {
		return r.runningElsewhere(h, cur, from)
	}
	if running && cur.PID > 0 {
		h = cur
		r.setHolder(h, now)
	}
	if !running {
		// The holder may have exited and removed its file since Holder.
		if _, err := l.Holder(); errors.Is(err, instancelock.ErrNotRunning) {
			*r = statusReport{Path: path, Status: "not running", code: statusAbsent}
			return r
		}
	}
	r.locked = running
	if running {
		r.Alive, r.process = true, "is alive"
		r.code, r.Status = statusRunning, "running"
		return r
	}
	r.process = "does not hold it"
	if from == originBoot {
		r.process = "does not hold it (written in another PID namespace of this boot, whose lock the kernel shows free)"
	}
	r.code, r.Status, r.Stale = statusStale, "stale", true
	return r
}

// runningElsewhere reports a lock held by the holder of a file written
// outside this PID space (h, set already): cur is what the library found
// of the holder, the pid the kernel shows here when it differs from the
// file's, which is a pid of the holder's own PID namespace (or machine).
func (r *statusReport) runningElsewhere(h, cur instancelock.ProcessLock, from origin) *statusReport {
	r.locked, r.Alive = true, true
	r.code, r.Status = statusRunning, "running"
	switch {
	case cur.PID > 0 && cur.PID != h.PID:
		r.PID = cur.PID // the pid as seen here; the rest is the file's
		r.process = fmt.Sprintf("is alive: pid %d here, pid %d in the PID namespace that wrote the file", cur.PID, h.PID)
	case from == originBoot && !otherNamespace(h):
		r.process = "is alive"
	case from == originBoot:
		r.process = fmt.Sprintf("is alive in another PID namespace of this boot (pid %d is its pid there, as the file says, not a pid here)", h.PID)
		r.where = " (in another PID namespace)"
	default:
		r.process = fmt.Sprintf("is alive, written %s (pid %d is its pid there)", whereWritten(h), h.PID)
		r.where = " (on another machine or boot)"
	}
	return r
}

// blockedAdvice says what to do about a PID file that nothing locks but
// whose live process makes starts refuse (instancelock.AlreadyRunningError
// with Unlocked set): status and stop print it alike.
func blockedAdvice(path string, are *instancelock.AlreadyRunningError) string {
	pid := are.Holder.PID
	return fmt.Sprintf("pid %d named in %s is alive but does not hold the lock (a bare PID written by a tool that takes no lock?); starts refuse while it lives: stop it by its own means, or, if pid %d is not that program, remove %s", pid, path, pid, path)
}

// remnant reports a file that holds what a crash left of a PID file: stale,
// unless a process holds its lock (a holder writing it in place).
func (r *statusReport) remnant(l *instancelock.Locker) *statusReport {
	cur, running, err := l.Running()
	switch {
	case errors.Is(err, instancelock.ErrWouldBlock):
		return r.refused(err)
	case err != nil:
		return r.unknown(fmt.Sprintf("cannot tell whether %s is held: %s", r.Path, pathErr(r.Path, err)))
	case running && cur.PID > 0:
		// The kernel names the flock's owner, which the file does not
		// name: a holder writing it, or a process that is not one and
		// that this user cannot check (see instancelock.ErrWouldBlock).
		r.setHolder(cur, time.Now())
		r.code, r.Status, r.locked = statusRunning, "running", true
		r.process = fmt.Sprintf("unknown: the file is being written, or pid %d holds its lock without being an instance (see /proc/locks)", cur.PID)
		return r
	case running:
		r.code, r.Status, r.locked = statusRunning, "running", true
		r.process = "unknown: the file is being written"
		return r
	}
	if _, err := l.Holder(); errors.Is(err, instancelock.ErrNotRunning) {
		*r = statusReport{Path: r.Path, Status: "not running", code: statusAbsent}
		return r
	}
	r.code, r.Status, r.Stale = statusStale, "stale", true
	r.process = "what a crash left of a PID file"
	return r
}

// refused reports a file that no process holds but that starts refuse
// (shared locks on it while the lock's name is taken by a process that
// cannot be its holder): the library's error says what blocks them.
func (r *statusReport) refused(err error) *statusReport {
	return r.unknown(fmt.Sprintf("%s: starts are refused: %s", r.Path, pathErr(r.Path, err)))
}

func (r *statusReport) unknown(reason string) *statusReport {
	r.code, r.Status, r.reason, r.Error = statusUnknown, "unknown", reason, reason
	return r
}

func (r *statusReport) setHolder(h instancelock.ProcessLock, now time.Time) {
	r.PID, r.Port, r.GoVersion, r.InstanceID, r.Hostname, r.StartToken, r.PIDSpace =
		h.PID, h.Port, h.GoVersion, h.InstanceID, h.Hostname, h.StartToken, h.PIDSpace
	r.StartedAt, r.UptimeSeconds = "", 0
	if !h.StartedAt.IsZero() {
		r.StartedAt = h.StartedAt.UTC().Format(timeLayout)
		r.UptimeSeconds = now.Sub(h.StartedAt).Round(time.Millisecond).Seconds()
	}
}

// timeLayout is the PID file's format of startedAt.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

// pathErr is err on one line, without the "op path:" prefix of an
// *fs.PathError about path (the caller names the path).
func pathErr(path string, err error) string {
	var pe *fs.PathError
	abs, _ := filepath.Abs(path) // the library names the path it resolved
	if errors.As(err, &pe) && (pe.Path == path || pe.Path == abs) {
		err = pe.Err
	}
	return oneLine(err)
}

// parentNotDir returns an error when the directory part of path names a
// file that is not a directory. On Unix the PID file's lookup reports this
// itself (ENOTDIR); Windows reports it as a missing path
// (ERROR_PATH_NOT_FOUND), which would read as "not running".
func parentNotDir(path string) error {
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
		return fmt.Errorf("%s: %s is not a directory", path, dir)
	}
	return nil
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

func (r *statusReport) writeText(w io.Writer) {
	switch r.code {
	case statusAbsent:
		fmt.Fprintf(w, "%s: not running (no PID file)\n", r.Path)
		return
	case statusUnknown:
		if r.PID == 0 {
			return // the reason goes to stderr
		}
		fmt.Fprintf(w, "%s: unknown\n", r.Path)
	case statusRunning:
		fmt.Fprintf(w, "%s: running, pid %d%s holds the lock\n", r.Path, r.PID, r.where)
	case statusStale:
		if r.PID == 0 {
			fmt.Fprintf(w, "%s: stale, it holds %s and the lock is free\n", r.Path, r.process)
			return
		}
		fmt.Fprintf(w, "%s: stale, pid %d named in the file does not hold the lock, which is free\n", r.Path, r.PID)
	}
	row := func(k, v string) { fmt.Fprintf(w, "  %-12s %s\n", k+":", v) }
	row("pid", fmt.Sprint(r.PID))
	started := "unknown"
	if r.StartedAt != "" {
		up := time.Duration(r.UptimeSeconds * float64(time.Second)).Round(time.Second)
		started = fmt.Sprintf("%s (uptime %s)", r.StartedAt, up)
	}
	row("started", started)
	row("port", orDash(r.Port))
	row("host", orDash(r.Hostname))
	row("instance id", orDash(r.InstanceID))
	row("go version", orDash(r.GoVersion))
	if r.code == statusUnknown {
		return
	}
	row("process", r.process)
	lock := "free"
	if r.locked {
		lock = "held"
	}
	row("lock", lock)
}

func orDash[T comparable](v T) string {
	var zero T
	if v == zero {
		return "-"
	}
	return fmt.Sprint(v)
}
