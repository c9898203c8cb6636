package instancelock

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
)

// DefaultPath is the PID file a Locker uses when given the path "".
const DefaultPath = "./data/backend.pid"

// Environment variables read by FromEnv.
const (
	EnvPath  = "PID_FILE_PATH"         // overrides the PID file path
	EnvDebug = "PROCESS_MANAGER_DEBUG" // "true" turns on debug logging
)

// defaultWatchInterval is how often a held lock checks that its file is
// still in place when Locker.WatchInterval is 0.
const defaultWatchInterval = time.Second

// Locker is a single-instance lock on one PID file. It is safe for
// concurrent use. A Locker holds the lock at most once: TryLock on a held
// Locker is an error.
//
// While held, the PID file contains this process's ProcessLock and is
// locked by the kernel (flock on Unix, LockFileEx on Windows) through an
// open file that is closed on exec, so the lock dies with the process and
// is never inherited by children. On Linux the Locker also holds a name in
// the abstract Unix-socket namespace derived from the file's path, which
// no rm or mv can touch: while the holder lives no other process of the
// host acquires the lock, whatever happened to the file or its directory
// (see docs/design.md).
//
// Create it with New or FromEnv, set the exported fields before the first
// method call and do not change them afterwards; the zero value of each
// field is its default (Acquire is New and TryLock with every default). The zero Locker is ready to use: it
// locks DefaultPath, made absolute at its first use.
type Locker struct {
	// Port is the port the instance serves on, recorded in the PID file
	// (and shown by AlreadyRunningError.Help). 0, the default, records
	// none; TryLock refuses a value outside 0..65535.
	Port int
	// Logger receives the Locker's records (acquisitions, take-overs,
	// re-publications, losses); nil means silent.
	Logger *slog.Logger
	// WatchInterval is how often a held lock checks that its PID file is
	// still in place. 0 means 1 second. On Linux an inotify watch also
	// runs the check at once when the file or its directory is removed,
	// moved or replaced. Negative turns both off: the file is then neither
	// re-published nor reported lost; on Linux a second instance of the
	// host is still refused while the holder lives.
	WatchInterval time.Duration
	// DisableRepublish decides what a holder does when its PID file is
	// removed, moved or replaced while it still holds the lock (a temp
	// cleaner, rm -rf data/). false, the default: it writes its PID file
	// again (the file only describes the holder; the lock decides), logs a
	// warning and keeps running; Lost and Err report a loss only when that
	// fails, for example because another process holds the file now put at
	// the path. true: it reports the loss at once (Lost, Err), as a host
	// that wants to stop then needs. On Linux no other process of the host
	// can take the lock in between (see docs/design.md); elsewhere another
	// instance may start in the moment before the file is noticed gone,
	// and the holder then reports the loss. A symbolic link on the path
	// that now leads to another directory counts as a removal: the holder
	// re-publishes where the path now leads (on Linux, taking that real
	// path's name first), or, with true, reports the loss.
	DisableRepublish bool
	// FS is the file system that holds the PID file; nil means the
	// operating system's. Paths on another FS are used as given (not made
	// absolute). For tests: instancelocktest.MemFS.
	FS FS
	// Processes is the process table the Locker asks whether a holder is
	// alive and signals; nil means the operating system's. For tests:
	// instancelocktest.MemProcesses.
	Processes ProcessTable

	given     string    // the path given to New; "" means DefaultPath
	abs       string    // given made absolute by New; "" until then
	setupOnce sync.Once // runs setup at the first method call
	setupErr  error     // what setup found wrong in the fields

	path      string
	fsys      FS
	procs     ProcessTable
	log       *slog.Logger
	port      int
	watch     time.Duration
	hostname  string
	pidSpace  string // thisPIDSpace(); see sameHost
	id        string
	byRename  bool                    // publishByRename; a field so tests can run the other mode
	name      string                  // the lock's abstract socket name (Linux, OS file system), "" for none
	real      atomic.Pointer[realDir] // realName's cache (Linux)
	kernel    bool                    // the OS file system and process table: readers ask the kernel (look)
	keep      bool                    // !DisableRepublish
	nameHeld  atomic.Bool
	selfToken *string // this process's start token, read once; guarded by mu
	tmpl      []byte  // the content with a placeholder start time (see content); guarded by mu
	tmplAt    int     // where the placeholder is in tmpl, -1 when it cannot be used
	stamp     string  // the placeholder
	pid       int     // os.Getpid(), read once; guarded by mu
	tmpPrefix string  // the temporary files' names begin with it (see tempPrefix)
	swept     bool    // temporary files left by crashes were looked for; guarded by mu

	mu   sync.Mutex // serialises TryLock and Unlock
	t    *tenure    // the current tenure, nil when not held
	last atomic.Pointer[tenure]
}

// tenure is one holding of the lock.
type tenure struct {
	f    File
	info ProcessLock
	lost chan struct{} // closed when the file is found removed or replaced
	err  atomic.Pointer[error]

	// The watcher is a timer, not a goroutine: each firing checks the file
	// and re-arms the timer. wmu serialises a firing with Unlock.
	wmu     sync.Mutex
	timer   *time.Timer
	stopped bool
	tmp     string // a temporary name that could not be removed, retried at Unlock
	inPlace bool   // written in place on Unix: the directory may not let us remove it

	heldNames             // the lock's names (Linux)
	watched   bool        // registered with the inotify watcher (watchHeld)
	armed     bool        // arm ran
	wds       [2]int32    // the inotify watches of the file and its directory (Linux), -1 for none
	data      []byte      // the published content, for re-publishing
	fi        fs.FileInfo // f's FileInfo when known (its identity only is used), nil when not

	readersGone chan struct{} // closed at Unlock: ends lockWhenReadersLeave (nil when it never ran)
}

// New returns a Locker for the PID file at path ("" means DefaultPath). A
// relative path is made absolute here, once: the lock follows the file,
// not the working directory (a path on another FS, see Locker.FS, is used
// as given). New does no other I/O; it fails only when the path is
// relative and the working directory cannot be read.
func New(path string) (*Locker, error) {
	abs, err := absPath(cmp.Or(path, DefaultPath))
	if err != nil {
		return nil, err
	}
	return &Locker{given: path, abs: abs}, nil
}

// FromEnv is New reading the environment: PID_FILE_PATH, when set and not
// empty, overrides path, and PROCESS_MANAGER_DEBUG=true sets Logger to
// debug records on standard error (set Logger afterwards to send them
// elsewhere).
func FromEnv(path string) (*Locker, error) {
	if p := os.Getenv(EnvPath); p != "" {
		path = p
	}
	l, err := New(path)
	if err != nil {
		return nil, err
	}
	if os.Getenv(EnvDebug) == "true" {
		l.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return l, nil
}

// absPath makes path absolute, so that a later os.Chdir changes nothing.
func absPath(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", &fs.PathError{Op: "abs", Path: path, Err: fmt.Errorf("%w (the working directory cannot be read: give an absolute path)", err)}
	}
	return abs, nil
}

// setup turns the exported fields into the Locker's working state, once,
// at the first method call; every exported method calls it first. The
// error, for an invalid field, is returned by every method that returns
// one.
func (l *Locker) setup() error {
	l.setupOnce.Do(func() { l.setupErr = l.configure() })
	return l.setupErr
}

// configure is setup's work.
func (l *Locker) configure() error {
	l.id = uuid.NewString()
	l.path = cmp.Or(l.given, DefaultPath)
	l.fsys, l.procs = l.FS, l.Processes
	if l.fsys == nil {
		if l.abs == "" { // the zero Locker: resolved at its first use
			abs, err := absPath(l.path)
			if err != nil {
				return err
			}
			l.abs = abs
		}
		l.path, l.fsys = l.abs, osFS{}
	}
	if l.procs == nil {
		l.procs = osProcesses{}
	}
	if l.Port < 0 || l.Port > 65535 {
		return fmt.Errorf("instancelock: Locker.Port is %d, outside 0..65535: set the port the instance serves on, or 0 for none", l.Port)
	}
	l.port = l.Port
	switch {
	case l.WatchInterval == 0:
		l.watch = defaultWatchInterval
	case l.WatchInterval < 0:
		l.watch = -1
	default:
		l.watch = l.WatchInterval
	}
	l.keep = !l.DisableRepublish
	log := l.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l.log = log.With("pidfile", l.path)
	l.hostname, _ = os.Hostname()
	l.pidSpace = thisPIDSpace()
	l.byRename = byRename(l.fsys)
	l.tmpPrefix = tempPrefix(l.path)
	_, osfs := l.fsys.(osFS)
	_, osprocs := l.procs.(osProcesses)
	l.kernel = osfs && osprocs && hasLockName
	if osfs && hasLockName {
		l.name = lockName(l.path)
	}
	return nil
}

// byRename reports whether a Locker on fsys publishes its PID file by
// renaming a temporary file into place (Unix) or writes it in place
// (Windows, where an open file cannot be renamed): an FS with a
// WindowsRules method says which rules it follows (see FS), any other is
// taken to be this system's.
func byRename(fsys FS) bool {
	if m, ok := fsys.(interface{ WindowsRules() bool }); ok {
		return !m.WindowsRules()
	}
	return publishByRename
}

// Acquire is the call at the top of main: New followed by TryLock, with
// every field at its default (to set one, call New, set it, then TryLock).
// On success the caller holds the lock and must call Unlock (or hand the
// Locker to a GracefulShutdown). When another instance runs, the error
// matches ErrAlreadyRunning and is an *AlreadyRunningError.
func Acquire(path string) (*Locker, error) {
	l, err := New(path)
	if err != nil {
		return nil, err
	}
	if err := l.TryLock(); err != nil {
		return nil, err
	}
	return l, nil
}

// Path returns the PID file's path, absolute unless FS is set.
func (l *Locker) Path() string {
	l.setup()
	return l.path
}

// InstanceID returns the instance id this Locker writes into the PID file.
// It stays the same across acquisitions by the same Locker.
func (l *Locker) InstanceID() string {
	l.setup()
	return l.id
}

// Info returns the ProcessLock this Locker published, and whether it holds
// the lock now.
func (l *Locker) Info() (ProcessLock, bool) {
	l.setup()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.t == nil {
		return ProcessLock{}, false
	}
	return l.t.info, true
}

// Err returns nil while the lock is held, ErrNotHeld when the Locker does
// not hold the lock, and an error matching ErrLockLost once the lock was
// lost (see Lost); for a Locker with an invalid field, the error that
// TryLock returns. It is a single atomic load.
func (l *Locker) Err() error {
	if err := l.setup(); err != nil {
		return err
	}
	t := l.last.Load()
	if t == nil {
		return ErrNotHeld
	}
	if p := t.err.Load(); p != nil {
		return *p
	}
	return nil
}

// Lost returns a channel that is closed when the held lock is lost: its
// PID file was removed or replaced by something else (a temp cleaner,
// rm -rf data/) and could not be re-published (DisableRepublish, or
// another process holds the file now at the path, or it is someone's
// file). Another instance may then run, so the host should shut down
// (GracefulShutdown does when given the Locker). The channel belongs to
// the current holding; it is nil when the lock is not held, and it is not
// closed by Unlock.
func (l *Locker) Lost() <-chan struct{} {
	l.setup()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.t == nil {
		return nil
	}
	return l.t.lost
}

// TryLock acquires the lock without waiting. If another live process holds
// it, the error is an *AlreadyRunningError. A stale PID file — left by a
// process that died, naming a process that is not the one that wrote it
// (PID reuse), naming this process's own PID, or what a crash or power
// loss leaves of one (empty, only NUL bytes and whitespace, a cut-off
// prefix of either format, possibly followed by NUL bytes) — is taken
// over. Any other content that no process locks is someone's file: TryLock
// refuses it with an error matching ErrForeignFile and leaves it as it is,
// whatever its size (at most MaxFileSize+1 bytes of it are read). The directory is created (0755) if missing; the file is created
// 0644. The path must not be a symbolic link or anything but a regular
// file; nothing is created or changed when it is.
//
// On failure nothing of the existing PID file is changed. A second TryLock
// while this Locker holds the lock returns an error matching
// ErrAlreadyHeld.
func (l *Locker) TryLock() error {
	if err := l.setup(); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.t != nil {
		return fmt.Errorf("instancelock: TryLock %s: %w", l.path, ErrAlreadyHeld)
	}
	return l.tryLock()
}

// Lock acquires the lock, waiting while another process holds it, until ctx
// is done; it then returns context.Cause(ctx) joined with the last
// *AlreadyRunningError. On Linux the wait wakes on inotify events on the PID
// file and on the holder's exit (pidfd): the waiter holds the lock about
// 0.25 ms after the holder releases it, and about 1 ms after the holder is
// killed (see the README's measurements); elsewhere it polls with a backoff
// up to 50 ms. Errors other than ErrAlreadyRunning end the wait.
func (l *Locker) Lock(ctx context.Context) error {
	if err := l.setup(); err != nil {
		return err
	}
	err := l.TryLock()
	var are *AlreadyRunningError
	if !errors.As(err, &are) {
		return err // held at once (no watch was set up), or a real error
	}
	// Watch before the next attempt, so no release between the attempt and
	// the wait goes unnoticed.
	w, werr := newWaiter(l.dir(), filepath.Base(l.path))
	if werr != nil {
		l.log.Debug("waiting by polling", "err", werr)
	} else {
		defer w.close()
	}
	backoff := time.Millisecond
	for {
		err := l.TryLock()
		if !errors.As(err, &are) {
			return err
		}
		if ctx.Err() != nil {
			return errors.Join(context.Cause(ctx), err)
		}
		pid := 0
		if l.sameHost(are.Holder) {
			pid = are.Holder.PID
		}
		if w != nil {
			w.wait(ctx, pid, 100*time.Millisecond)
		} else {
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
			backoff = min(2*backoff, 50*time.Millisecond)
		}
	}
}

func (l *Locker) dir() string { return filepath.Dir(l.path) }

// maxAttempts bounds the retries when the file changes under us.
const maxAttempts = 20

func (l *Locker) tryLock() error {
	if !l.byRename {
		if err := l.checkPath(); err != nil {
			return err
		}
	}
	if l.pid == 0 {
		l.pid = os.Getpid()
	}
	info := ProcessLock{
		PID:        l.pid,
		StartedAt:  time.Now().UTC().Truncate(time.Millisecond),
		Port:       l.port,
		GoVersion:  goVersion,
		InstanceID: l.id,
		Hostname:   l.hostname,
		PIDSpace:   l.pidSpace,
	}
	if l.selfToken == nil {
		token, _, _ := l.procs.Start(info.PID)
		l.selfToken = &token
	}
	info.StartToken = *l.selfToken
	data, err := l.content(info)
	if err != nil {
		return err
	}
	names := heldNames{sock: -1, rsock: -1}
	if l.name != "" {
		// The names first: while another process of this host holds one,
		// nothing else is tried (see holder.go).
		if names, err = l.claimNames(); err != nil {
			return err
		}
		l.nameHeld.Store(names.all(l.name))
		defer l.nameHeld.Store(false)
	}
	var p published
	if l.name != "" && names.all(l.name) && l.byRename {
		p.f, p.fi, err = l.createHeld(data)
	}
	if p.f == nil && err == nil {
		p, err = l.publish(data)
	}
	if err != nil {
		names.close()
		return err
	}
	l.hold(p, info, data, names)
	if p.inPlace && l.kernel && errors.Is(p.f.TryLock(), ErrWouldBlock) {
		t := l.t
		t.wmu.Lock()
		l.lockLater(t)
		t.wmu.Unlock()
	}
	if !p.inPlace && (!l.swept || p.tookOver) {
		l.sweepTemps()
	}
	return nil
}

// publish puts a PID file with data at the path and returns it, open and
// locked: the file protocol of TryLock (attemptRename or attemptInPlace),
// tried again while the file changes under it. It is also how a holder
// re-publishes its file.
func (l *Locker) publish(data []byte) (published, error) {
	var last *AlreadyRunningError
	pause := 100 * time.Microsecond // grows to 2 ms between transient refusals
	inPlace := !l.byRename
	for range maxAttempts {
		var a attempt
		var err error
		if inPlace {
			a, err = l.attemptInPlace(data)
		} else {
			a, err = l.attemptRename(data)
		}
		if err != nil {
			return published{}, l.publishError(err, inPlace)
		}
		switch a.try {
		case won:
			return published{f: a.f, inPlace: inPlace, leftover: a.leftover, tookOver: a.tookOver}, nil
		case noTemp:
			// The directory does not let us create a file (a root-owned
			// directory with the PID file made for the service user, a
			// read-only directory): lock and write the existing file in
			// place, as on Windows.
			l.log.Debug("cannot create a temporary file next to the PID file; writing it in place", "err", a.cause)
			inPlace = true
		case refused:
			if !a.transient {
				return published{}, a.holder
			}
			last = a.holder
			time.Sleep(pause)
			pause = min(2*pause, 2*time.Millisecond)
		}
	}
	if last != nil {
		return published{}, last
	}
	return published{}, &fs.PathError{Op: "lock", Path: l.path, Err: errContended}
}

// publishError is publish's error for an attempt's err: when this user
// may not create the PID file in its directory, it says what to do.
func (l *Locker) publishError(err error, inPlace bool) error {
	if inPlace && l.byRename && errors.Is(err, fs.ErrPermission) && l.dirExists() {
		return &fs.PathError{Op: "lock", Path: l.path, Err: fmt.Errorf(
			"%w (this user cannot create files in %s: create the PID file for it beforehand, e.g. with install -o USER -m 0644 /dev/null and this path, or let it write the directory)",
			l.cause(err), l.dir())}
	}
	return err
}

// published is a PID file put at the path (publish, createHeld).
type published struct {
	f        File        // open, and locked (see lockWhenReadersLeave)
	fi       fs.FileInfo // f's FileInfo when known (createHeld), nil otherwise
	inPlace  bool        // written in place, not renamed into place
	leftover string      // a temporary name that could not be removed (Unlock retries)
	tookOver bool        // it replaced a stale file
}

// try is what one attempt of the file protocol came to.
type try int

const (
	again   try = iota // the file changed under us, or a temporary name was taken: try again at once
	won                // the PID file is published
	refused            // a live process holds the lock
	noTemp             // no temporary file can be created next to the PID file: write it in place
)

// attempt is the outcome of one try of the file protocol (attemptRename,
// attemptInPlace), which publish acts on.
type attempt struct {
	try       try
	f         File                 // won: the PID file, open and locked
	leftover  string               // won: a temporary name that could not be removed
	tookOver  bool                 // won by replacing a stale file
	holder    *AlreadyRunningError // refused: who holds the lock
	transient bool                 // refused by content that looks stale: try again after a pause
	cause     error                // noTemp: why no temporary file can be created
}

// testHookBeforePublish, when set by a test, runs between the creation of
// a temporary file and its publication.
var testHookBeforePublish func(tmp string)

// stampSentinel stands for the start time in a Locker's content template.
var stampSentinel = time.Date(2000, 1, 2, 3, 4, 5, 6e6, time.UTC)

// content returns the PID file's content for info. Only StartedAt changes
// from one acquisition to the next, so the JSON is made once per Locker
// with a placeholder time, and each acquisition copies it with the time
// written over the placeholder (RFC 3339 in UTC with milliseconds has a
// fixed width): the same bytes MarshalJSON gives, without its cost.
func (l *Locker) content(info ProcessLock) ([]byte, error) {
	if l.tmpl == nil {
		t := info
		t.StartedAt = stampSentinel
		b, err := t.MarshalJSON()
		if err != nil {
			return nil, err
		}
		l.tmpl, l.tmplAt = append(b, '\n'), -1
		l.stamp = stampSentinel.Format(timeLayout)
		if s := []byte(l.stamp); bytes.Count(b, s) == 1 {
			l.tmplAt = bytes.Index(b, s)
		}
	}
	if l.tmplAt >= 0 {
		var buf [64]byte // AppendFormat uses room past its result: not data's
		if stamp := info.StartedAt.UTC().AppendFormat(buf[:0], timeLayout); len(stamp) == len(l.stamp) {
			data := slices.Clone(l.tmpl)
			copy(data[l.tmplAt:], stamp)
			return data, nil
		}
	}
	b, err := info.MarshalJSON()
	return append(b, '\n'), err
}

// checkPath refuses a path whose last component is a symbolic link or not a
// regular file.
func (l *Locker) checkPath() error {
	fi, err := l.fsys.Lstat(l.path)
	switch {
	case err == nil:
		return l.checkMode(fi)
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	return nil
}

// create opens name with flag (which includes O_CREATE) and mode 0644; if
// the directory is missing, it creates it (0755) and tries again. A file it
// creates for sure (O_EXCL) gets mode 0644 whatever the umask.
func (l *Locker) create(name string, flag int) (File, error) {
	f, err := l.fsys.OpenFile(name, flag, 0o644)
	if errors.Is(err, fs.ErrNotExist) {
		if err := l.mkdir(); err != nil {
			return nil, err
		}
		f, err = l.fsys.OpenFile(name, flag, 0o644)
	}
	if err == nil && flag&os.O_EXCL != 0 {
		if c, ok := f.(interface{ Chmod(fs.FileMode) error }); ok {
			if err := c.Chmod(0o644); err != nil {
				l.log.Debug("cannot set the mode of the new file", "err", err)
			}
		}
	}
	return f, err
}

// mkdir creates the PID file's directory and its missing parents, and gives
// each directory it created mode 0755 whatever the umask. Directories that
// existed are left as they are.
func (l *Locker) mkdir() error {
	var missing []string
	for d := l.dir(); ; d = filepath.Dir(d) {
		if _, err := l.fsys.Lstat(d); !errors.Is(err, fs.ErrNotExist) {
			break
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if err := l.fsys.MkdirAll(l.dir(), 0o755); err != nil {
		return err // names the directory
	}
	if c, ok := l.fsys.(interface {
		Chmod(string, fs.FileMode) error
	}); ok {
		for i := len(missing) - 1; i >= 0; i-- {
			if err := c.Chmod(missing[i], 0o755); err != nil {
				l.log.Debug("cannot set the mode of a new directory", "dir", missing[i], "err", err)
			}
		}
	}
	return nil
}

// dirExists reports whether the PID file's directory exists.
func (l *Locker) dirExists() bool {
	_, err := l.fsys.Lstat(l.dir())
	return err == nil
}

// tempPrefix is what the names of a Locker's temporary files begin with:
// "<path>.tmp-", or, when the PID file's name is too long for that suffix
// to fit in a 255-byte name, "<dir>/.<16 hex digits of its SHA-256>.tmp-".
// A random base-36 number of at most 13 digits follows.
func tempPrefix(path string) string {
	dir, base := filepath.Split(path)
	if len(base) > 255-len(".tmp-")-13 {
		sum := sha256.Sum256([]byte(base))
		base = "." + hex.EncodeToString(sum[:8])
	}
	return dir + base + ".tmp-"
}

// canWriteInPlace reports whether a failure to create a temporary file
// means that the directory does not let this process create files, so
// that the existing PID file may be written in place instead.
func canWriteInPlace(err error) bool {
	return errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS)
}

// sweepTemps removes the temporary files that processes which died between
// creating and publishing them left next to the PID file. A temporary file
// is locked by its creator from before it is written until it is published
// or removed, so only a file whose lock this Locker can take, whose name
// has exactly the form of a temporary name and whose content is what
// writeTemp writes (or a crash remnant of it) is removed; it is removed
// while its lock is held. A creator that loses its lock to the sweep before
// taking it tries again with another name.
func (l *Locker) sweepTemps() {
	l.swept = true
	lister, ok := l.fsys.(interface {
		ListDir(string) ([]string, error)
	})
	if !ok {
		return
	}
	dir := filepath.Dir(l.tmpPrefix)
	prefix := filepath.Base(l.tmpPrefix + "x")
	prefix = prefix[:len(prefix)-1]
	names, err := lister.ListDir(dir)
	if err != nil {
		l.log.Debug("cannot look for temporary files left by crashes", "err", err)
		return
	}
	for _, n := range names {
		suffix, ok := strings.CutPrefix(n, prefix)
		if !ok || !isTempSuffix(suffix) {
			continue
		}
		name := filepath.Join(dir, n)
		f, err := l.fsys.OpenFile(name, os.O_RDONLY, 0)
		if err != nil {
			continue
		}
		if f.TryLock() == nil {
			st, serr := f.Stat()
			now, lerr := l.fsys.Lstat(name)
			data, rerr := readLimited(f)
			if serr == nil && lerr == nil && rerr == nil && st.Mode().IsRegular() && l.fsys.SameFile(st, now) {
				if _, kind := classify(data); kind != contentForeign && l.fsys.Remove(name) == nil {
					l.log.Info("removed a temporary file left by a crash", "tmp", name)
				}
			}
		}
		f.Close()
	}
}

// isTempSuffix reports whether s is the random part of a temporary name.
func isTempSuffix(s string) bool {
	if s == "" || len(s) > 13 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'z') {
			return false
		}
	}
	return true
}

func (l *Locker) checkMode(fi fs.FileInfo) error {
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return &fs.PathError{Op: "lock", Path: l.path, Err: fmt.Errorf("%w: %w", ErrForeignFile, errSymlink)}
	case !fi.Mode().IsRegular():
		return &fs.PathError{Op: "lock", Path: l.path, Err: fmt.Errorf("%w: %w (mode %v): it is left as it is; choose another path", ErrForeignFile, errNotRegular, fi.Mode())}
	}
	return nil
}

// attemptRename is one try on Unix: write and lock a new file under a
// temporary name, then publish it with link(2) (no PID file) or rename(2)
// over a stale PID file whose lock we hold. Only the holder of the kernel
// lock of the file at the path ever replaces it, so a loser never touches
// the winner's file.
func (l *Locker) attemptRename(data []byte) (attempt, error) {
	fi, err := l.fsys.Lstat(l.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return l.link(data)
	case err != nil:
		return attempt{}, err
	}
	// A PID file is in place: judge it before writing anything, so that a
	// loser creates no file at all. A symbolic link or anything but a
	// regular file is refused before anything is created.
	if err := l.checkMode(fi); err != nil {
		return attempt{}, err
	}
	return l.replaceExisting(data)
}

// link publishes a new file where there is none: written and locked under
// a temporary name, then linked to the path. When another contender
// published first, its file is judged (replaceExisting).
func (l *Locker) link(data []byte) (attempt, error) {
	tmp, a, err := l.writeTemp(data)
	if tmp == nil {
		return a, err
	}
	if testHookBeforePublish != nil {
		testHookBeforePublish(tmp.Name())
	}
	err = l.fsys.Link(tmp.Name(), l.path)
	if err == nil {
		a := attempt{try: won, f: tmp}
		if err := l.fsys.Remove(tmp.Name()); err != nil {
			l.log.Warn("could not remove the temporary name", "tmp", tmp.Name(), "err", err)
			a.leftover = tmp.Name()
		}
		l.log.Debug("acquired")
		return a, nil
	}
	tmp.Close()
	l.fsys.Remove(tmp.Name())
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return attempt{try: again}, nil // a sweep took the temporary name
	case !errors.Is(err, fs.ErrExist):
		return attempt{}, l.pathError("lock", err)
	}
	return l.replaceExisting(data) // another contender published first
}

// replaceExisting judges the file at the path under its kernel lock, and
// replaces it when it is stale.
func (l *Locker) replaceExisting(data []byte) (attempt, error) {
	old, j, err := l.lockExisting()
	if err != nil || j.verdict != takeOver {
		return j.attempt(), err
	}
	defer old.Close()
	return l.replace(data)
}

// replace publishes a new file over the stale PID file, whose kernel lock
// the caller holds (and which it checked is still at the path).
func (l *Locker) replace(data []byte) (attempt, error) {
	tmp, a, err := l.writeTemp(data)
	if tmp == nil {
		return a, err
	}
	if testHookBeforePublish != nil {
		testHookBeforePublish(tmp.Name())
	}
	if err := l.fsys.Rename(tmp.Name(), l.path); err != nil {
		tmp.Close()
		l.fsys.Remove(tmp.Name())
		if errors.Is(err, fs.ErrNotExist) {
			return attempt{try: again}, nil // a sweep took the temporary name
		}
		return attempt{}, l.pathError("lock", err)
	}
	return attempt{try: won, f: tmp, tookOver: true}, nil
}

// writeTemp creates, locks and fills a new file next to the PID file. When
// it returns no file, the attempt says what to do instead: try again (the
// name was taken), or write in place (no file can be created here).
func (l *Locker) writeTemp(data []byte) (File, attempt, error) {
	name := l.tmpPrefix + strconv.FormatUint(rand.Uint64(), 36)
	f, err := l.create(name, os.O_RDWR|os.O_CREATE|os.O_EXCL)
	switch {
	case errors.Is(err, fs.ErrExist):
		return nil, attempt{try: again}, nil
	case err != nil && canWriteInPlace(err):
		return nil, attempt{try: noTemp, cause: err}, nil
	case err != nil:
		return nil, attempt{}, l.pathError("lock", err)
	}
	if err := f.TryLock(); errors.Is(err, ErrWouldBlock) {
		// A sweep took it between its creation and this lock: it is
		// removing it.
		f.Close()
		return nil, attempt{try: again}, nil
	} else if err != nil {
		f.Close()
		l.fsys.Remove(name)
		return nil, attempt{}, l.pathError("lock", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		l.fsys.Remove(name)
		return nil, attempt{}, l.pathError("lock", err)
	}
	return f, attempt{}, nil
}

// lockExisting opens the file at the path, takes its kernel lock and judges
// it. It returns the file, open and locked, when the judgement is to take
// it over.
func (l *Locker) lockExisting() (File, judgement, error) {
	old, err := l.fsys.OpenFile(l.path, os.O_RDONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, judgement{verdict: changed}, nil
	}
	if err != nil {
		return nil, judgement{}, l.openError(err)
	}
	j, err := l.judgeLocked(old)
	if err != nil || j.verdict != takeOver {
		old.Close()
		return nil, j, err
	}
	return old, j, nil
}

// openError is the error of opening the path: a symbolic link or anything
// but a regular file there is refused as such (ErrForeignFile), anything
// else is the open's own error.
func (l *Locker) openError(err error) error {
	if fi, lerr := l.fsys.Lstat(l.path); lerr == nil {
		if merr := l.checkMode(fi); merr != nil {
			return merr
		}
	}
	return l.pathError("open", err)
}

// attemptInPlace is one try on Windows, where a file held open cannot be
// renamed, and on Unix in a directory where this user cannot create files:
// open or create the PID file, judge it (an empty one: claimEmpty), and
// write it in place when it may be taken over.
func (l *Locker) attemptInPlace(data []byte) (attempt, error) {
	f, err := l.create(l.path, os.O_RDWR|os.O_CREATE)
	if err != nil {
		return attempt{}, l.openError(err)
	}
	st, err := f.Stat()
	wasEmpty := err == nil && st.Size() == 0
	var j judgement
	switch {
	case err != nil:
	case wasEmpty:
		j, err = l.claimEmpty(f, st)
	default:
		j, err = l.judgeLocked(f)
	}
	if err != nil || j.verdict != takeOver {
		f.Close()
		return j.attempt(), err
	}
	if err := l.writeInPlace(f, data); err != nil {
		f.Close()
		if wasEmpty {
			// The file was empty (most likely created by this attempt):
			// leave nothing behind. If another contender opened it
			// meanwhile, the removal fails and the file is left to it.
			l.fsys.Remove(l.path)
		}
		return attempt{}, err
	}
	return attempt{try: won, f: f}, nil
}

// claimEmpty takes the kernel lock of f, an empty file at the path that
// st describes (most likely just created by this attempt): there is
// nothing to judge, but it must be locked and still be at the path. An
// empty file that only shared locks hold (readers, or a squatter) while
// this Locker holds the lock's names is taken over too: its lock is taken
// once they leave (see lockWhenReadersLeave).
func (l *Locker) claimEmpty(f File, st fs.FileInfo) (judgement, error) {
	switch err := f.TryLock(); {
	case err == nil:
		if now, err := l.fsys.Lstat(l.path); err != nil || !l.fsys.SameFile(st, now) {
			return judgement{verdict: changed}, nil
		}
		return judgement{verdict: takeOver}, nil
	case !errors.Is(err, ErrWouldBlock):
		return judgement{}, err
	}
	switch readers, ok := l.onlyReaders(st); {
	case ok:
		l.log.Warn("the PID file is held by shared locks only (readers, or someone squatting it); writing it in place, its lock is taken once they leave", "readers", readers)
		return judgement{verdict: takeOver}, nil
	case readers > 0:
		return judgement{}, &fs.PathError{Op: "lock", Path: l.path, Err: fmt.Errorf(
			"the file is empty and %d shared lock(s) hold it (readers; see /proc/locks), and the lock's name is not available to exclude other starts; try again once they are gone: %w", readers, ErrWouldBlock)}
	}
	// Being created by another contender, which is about to write it.
	return judgement{verdict: held, holder: &AlreadyRunningError{Path: l.path, Reason: "the holder keeps the kernel lock"}, transient: true}, nil
}

// writeInPlace empties f, the PID file, then writes data: a crash in
// between leaves a crash remnant (empty, or a prefix of data), which is
// judged stale; a write over longer old content would leave its tail
// behind.
func (l *Locker) writeInPlace(f File, data []byte) error {
	err := f.Truncate(0)
	if err == nil {
		_, err = f.WriteAt(data, 0)
	}
	if err != nil {
		return l.pathError("write", err)
	}
	return nil
}

// onlyReaders reports whether the file fi describes is held by shared
// flocks only (how many) while this Locker holds the lock's names, so that
// no other contender of this host is at the file: readers never block a
// start. Only where the kernel lists lock owners.
func (l *Locker) onlyReaders(fi fs.FileInfo) (int, bool) {
	if !l.kernel {
		return 0, false
	}
	writers, readers, err := flockOwners(fi)
	if err != nil || len(writers) > 0 {
		return 0, false
	}
	return readers, readers > 0 && l.nameHeld.Load()
}

// lockWhenReadersLeave takes the exclusive flock of f, the tenure's file
// written in place while only shared locks (readers, a squatter) held it,
// once they leave: it tries every few milliseconds to 100 ms until it gets
// it, the tenure ends or its file changes. Until then the lock rests on its
// names (this host); if another process takes the file's lock first (one
// of another network namespace sharing the volume), the tenure is lost.
func (l *Locker) lockWhenReadersLeave(t *tenure, f File, done <-chan struct{}) {
	pause := time.Millisecond
	for {
		select {
		case <-done:
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, 100*time.Millisecond)
		t.wmu.Lock()
		if t.stopped || t.f != f || t.err.Load() != nil {
			t.wmu.Unlock()
			return
		}
		err := f.TryLock()
		if errors.Is(err, ErrWouldBlock) {
			st, serr := f.Stat()
			if serr == nil {
				if writers, _, lerr := flockOwners(st); lerr == nil && len(writers) == 0 {
					t.wmu.Unlock()
					continue // readers still there
				}
			}
			err = fmt.Errorf("another process took its lock before this holder could: %w", err)
		}
		if err == nil {
			l.log.Info("the readers of the PID file left; it is locked now")
		} else {
			err = &fs.PathError{Op: "lock", Path: l.path, Err: fmt.Errorf("%w: %w", ErrLockLost, l.cause(err))}
			t.err.Store(&err)
			l.log.Error("lock lost: another instance may start", "err", err)
			close(t.lost)
		}
		t.wmu.Unlock()
		return
	}
}

// armAfter is when a holding arms its inotify watch and registers its
// socket with the watcher: a tenure shorter than that (a quick job) costs
// no watcher work at all, and a change made before is seen by the check
// that follows the arming.
const armAfter = 10 * time.Millisecond

// hold records a new tenure and starts the watcher: a timer that checks
// the file every interval and, on Linux, an inotify watch of the file and
// its directory that runs the same check at once on any event that may
// concern the file (see holdwatch_linux.go), armed armAfter after the
// acquisition. names are the lock's names held (Linux); the watcher also
// drains their sockets' connections.
func (l *Locker) hold(p published, info ProcessLock, data []byte, names heldNames) {
	t := &tenure{f: p.f, fi: p.fi, info: info, lost: make(chan struct{}), tmp: p.leftover, inPlace: p.inPlace && l.byRename, heldNames: names, wds: [2]int32{-1, -1}, data: data}
	l.t = t
	l.last.Store(t)
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug("lock acquired", "pid", info.PID, "instanceId", info.InstanceID, "socket", names.sock >= 0, "realPathSocket", names.rsock >= 0)
	}
	first := l.watch
	if l.kernel || names.sock >= 0 || names.rsock >= 0 {
		if first <= 0 || first > armAfter {
			first = armAfter
		}
	}
	if first > 0 {
		t.wmu.Lock()
		t.timer = time.AfterFunc(first, func() { l.watchFile(t) })
		t.wmu.Unlock()
	}
}

// arm starts the inotify watch and registers the socket (Linux). The
// caller holds t.wmu.
func (l *Locker) arm(t *tenure) {
	t.armed = true
	if !l.kernel && t.sock < 0 && t.rsock < 0 {
		return
	}
	path := ""
	if l.watch > 0 {
		path = l.path
	}
	err := watchHeld(t, l.dir(), path, t.poke(l))
	if err != nil && !errors.Is(err, errors.ErrUnsupported) {
		l.log.Debug("no inotify watch: the file is checked every interval only", "err", err)
	}
}

// poke returns the function the inotify watcher calls on an event that
// may concern the held file: a check at once, in its own goroutine.
func (t *tenure) poke(l *Locker) func() {
	return func() { go l.watchFile(t) }
}

// watchFile runs every interval, and at once on a file event (Linux),
// while the lock is held: it checks that the held file is still at the
// path, re-publishes it when it is not (unless DisableRepublish), and re-arms the
// timer.
func (l *Locker) watchFile(t *tenure) {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.stopped || t.err.Load() != nil {
		return
	}
	if !t.armed {
		l.arm(t)
		if l.watch <= 0 {
			return
		}
	}
	// Check, and re-publish while the file is not ours: the check after a
	// re-publication sees a change made before its watch was in place.
	for republished := 0; ; republished++ {
		err := l.check(t, false)
		if err == nil {
			break
		}
		if l.keep && republished < maxAttempts {
			perr := l.republish(t)
			if perr == nil {
				l.log.Warn("the PID file was removed or replaced while this process holds the lock; re-published it", "why", err)
				continue
			}
			err = fmt.Errorf("%w; re-publishing failed: %w", err, l.cause(perr))
		}
		t.err.Store(&err)
		l.log.Error("lock lost: another instance may start", "err", err)
		close(t.lost)
		return
	}
	if t.timer != nil {
		t.timer.Reset(l.watch)
	}
}

// republish puts the tenure's PID file back at the path, with the same
// content, by the same protocol as TryLock. When the path now leads to
// another real file (a symbolic link on it was swapped), it first takes
// that file's name (and fails when another holder has it), and afterwards
// gives back the old one and removes its old file. It fails when another
// process holds the file now at the path. The caller holds t.wmu.
func (l *Locker) republish(t *tenure) error {
	if t.sock >= 0 {
		l.nameHeld.Store(true)
		defer l.nameHeld.Store(false)
	}
	moved := false
	rsock := -1
	rname, rdir := "", ""
	if t.rname != "" {
		if rname, rdir = l.realName(); rname != t.rname {
			moved = true
			if rname != l.name {
				var err error
				if rsock, err = l.claimName(rname); err != nil {
					return err
				}
			}
		}
	}
	p, err := l.publish(t.data)
	if err != nil {
		closeName(rsock)
		return err
	}
	old := t.f
	if moved {
		// The old file, at the old real path, is ours: remove it (a file
		// written in place is left: the directory may not let us).
		oldPath := filepath.Join(t.rdir, filepath.Base(l.path))
		if !t.inPlace && l.checkAt(t, oldPath, true) == nil {
			l.fsys.Remove(oldPath)
		}
		rewatchSock(t, t.rsock, rsock)
		closeName(t.rsock)
		t.rsock, t.rname, t.rdir = rsock, rname, rdir
	}
	t.f, t.inPlace, t.fi = p.f, p.inPlace && l.byRename, nil
	if p.leftover != "" {
		if t.tmp != "" {
			l.fsys.Remove(t.tmp)
		}
		t.tmp = p.leftover
	}
	old.Close() // the old inode is elsewhere or unlinked: its lock goes with it
	if p.inPlace && l.kernel && errors.Is(p.f.TryLock(), ErrWouldBlock) {
		l.lockLater(t)
	}
	if l.watch > 0 {
		rewatchHeld(t, l.dir(), l.path, t.poke(l))
	}
	return nil
}

// lockLater starts lockWhenReadersLeave for t's file. The caller holds
// t.wmu.
func (l *Locker) lockLater(t *tenure) {
	if t.readersGone == nil {
		t.readersGone = make(chan struct{})
	}
	go l.lockWhenReadersLeave(t, t.f, t.readersGone)
}

// stopWatch stops the watcher; when it returns, no check is running and
// none will run.
func (t *tenure) stopWatch() {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if !t.stopped && t.readersGone != nil {
		close(t.readersGone)
	}
	t.stopped = true
	if t.timer != nil {
		t.timer.Stop()
	}
}

// check returns an error matching ErrLockLost if the file at the path is no
// longer the one t holds, or (Linux) the path now leads to another real
// directory (a symbolic link on it was swapped). When it cannot tell (a
// stat fails), it returns nil unless strict, when it returns the failure:
// Unlock removes the path only when it is sure the file there is its own.
func (l *Locker) check(t *tenure, strict bool) error {
	if t.rname != "" {
		if rname, rdir := l.realName(); rname != t.rname {
			return &fs.PathError{Op: "watch", Path: l.path, Err: fmt.Errorf("%w: the path now leads to directory %s, not %s (a symbolic link on it was changed)", ErrLockLost, rdir, t.rdir)}
		}
	}
	return l.checkAt(t, l.path, strict)
}

// checkAt is check of the file at path only.
func (l *Locker) checkAt(t *tenure, path string, strict bool) error {
	mine, err := t.fi, error(nil)
	if mine == nil {
		mine, err = t.f.Stat()
	}
	if err != nil {
		if strict {
			return err
		}
		return nil // cannot tell; try again next time
	}
	now, err := l.fsys.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &fs.PathError{Op: "watch", Path: path, Err: fmt.Errorf("%w: the PID file was removed", ErrLockLost)}
	case err != nil:
		if strict {
			return err
		}
		return nil
	case !l.fsys.SameFile(mine, now):
		return &fs.PathError{Op: "watch", Path: path, Err: fmt.Errorf("%w: the PID file was replaced", ErrLockLost)}
	}
	return nil
}

// Unlock releases the lock: it removes the PID file, if it is still the
// file this Locker published, then closes it, which drops the kernel lock.
// Unlock on a Locker that does not hold the lock returns nil, so it may be
// deferred and also called on shutdown. A file that something else put at
// the path is left alone.
func (l *Locker) Unlock() error {
	l.setup() // an invalid field only means it was never held
	l.mu.Lock()
	defer l.mu.Unlock()
	t := l.t
	if t == nil {
		return nil
	}
	t.stopWatch()
	l.t = nil
	if t.watched {
		unwatchHeld(t)
	}
	// The names first: a waiter woken by the file's removal below must
	// find them free.
	t.heldNames.close()
	if t.tmp != "" {
		// The temporary name could not be removed at acquisition.
		l.fsys.Remove(t.tmp)
	}
	err := l.release(t)
	if t.err.Load() == nil {
		e := ErrNotHeld
		t.err.Store(&e)
	}
	l.log.Debug("lock released")
	return err
}

// release removes the file t holds, unless it is not sure that the file
// at its path is its own, and closes it, which drops its kernel lock.
func (l *Locker) release(t *tenure) error {
	path, err := l.heldPath(t)
	switch {
	case err != nil:
		l.log.Warn("releasing a lock whose file is not (or may not be) its own; leaving the path alone", "err", err)
		return t.f.Close()
	case !l.byRename:
		// Windows: a file held open cannot be deleted, so close first. If a
		// contender opens the file in between, its open handle makes the
		// removal fail and the file is left to it.
		err := t.f.Close()
		if rerr := l.fsys.Remove(path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			l.log.Debug("PID file left in place", "err", rerr)
		}
		return err
	}
	// Unlink first, then close: a waiter that opened this file before the
	// unlink finds, once it gets the lock, that the file is no longer at
	// the path, and tries again.
	err = l.unpublish(t, path)
	if cerr := t.f.Close(); cerr != nil && err == nil {
		err = l.pathError("close", cerr)
	}
	return err
}

// heldPath returns where the file t holds is: at the path, or, if a
// symbolic link on the path was changed since, at the real path it was
// reached by. The error says why that is not sure.
func (l *Locker) heldPath(t *tenure) (string, error) {
	path := l.path
	err := l.checkAt(t, path, true)
	if err != nil && t.rname != "" {
		if rname, _ := l.realName(); rname != t.rname {
			path = filepath.Join(t.rdir, filepath.Base(l.path))
			err = l.checkAt(t, path, true)
		}
	}
	return path, err
}

// unpublish removes path, the file t holds. A file written in place in a
// directory that does not let us remove it is emptied instead, so that it
// is judged stale at once even while this process lives on.
func (l *Locker) unpublish(t *tenure, path string) error {
	err := l.fsys.Remove(path)
	switch {
	case err == nil || errors.Is(err, fs.ErrNotExist):
		return nil
	case t.inPlace && canWriteInPlace(err):
		l.log.Debug("PID file left in place, emptied", "err", err)
		if err := t.f.Truncate(0); err != nil {
			return l.pathError("truncate", err)
		}
		return nil
	}
	return l.pathError("remove", err)
}

// readLimited reads at most MaxFileSize+1 bytes from the current offset.
func readLimited(f File) ([]byte, error) {
	return io.ReadAll(io.LimitReader(f, MaxFileSize+1))
}

// readAt0 reads the file again from the start.
func readAt0(f File) ([]byte, error) {
	return io.ReadAll(io.NewSectionReader(f, 0, MaxFileSize+1))
}

var goVersion = runtime.Version()
