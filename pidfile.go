package instancelock

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
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

// minWatchInterval is the shortest positive Locker.WatchInterval accepted:
// a shorter one is almost always a bare number meant as seconds, which Go
// reads as nanoseconds, and would keep a CPU core busy re-checking the file.
const minWatchInterval = 10 * time.Millisecond

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
// host acquires the lock by that path or through symbolic links, whatever
// happened to the file or its directory (see docs/design.md; another
// network namespace, or another path that a bind mount gives the
// directory, meets only the file's lock).
//
// Create it with New or FromEnv, then set the exported fields; the zero
// value of each field is its default (Acquire is New and TryLock with
// every default). The first call of TryLock, Lock, Unlock, Holder,
// Running, CleanStale or Terminate, the methods that use the fields, fixes
// the configuration: set the fields before it and do not change them
// afterwards (a later change is not seen). Path, InstanceID, Info, Err and
// Lost fix nothing, and neither does handing the Locker to
// NewGracefulShutdown or NewHealth, so a program may wire those first and
// set the fields afterwards. The zero Locker is ready to use: it locks
// DefaultPath, made absolute when its configuration is fixed.
type Locker struct {
	// Port is the port the instance serves on, recorded in the PID file
	// (and shown by AlreadyRunningError.Help). 0, the default, records
	// none; TryLock refuses a value outside 0..65535.
	Port int
	// Logger receives the Locker's records (acquisitions, take-overs,
	// re-publications, losses); nil means silent.
	Logger *slog.Logger
	// WatchInterval is how often a held lock checks that its PID file is
	// still in place. 0 means 1 second; a positive value must be at least
	// 10 ms (TryLock and Lock refuse a shorter one: a bare number such as
	// 5 is 5 nanoseconds, write 5 * time.Second). On Linux an inotify watch also
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

	given     string      // the path given to New; "" means DefaultPath
	abs       string      // given made absolute by New; "" for the zero Locker
	setupOnce sync.Once   // runs setup at the first call that uses the fields
	setupErr  error       // what setup found wrong in the fields
	ready     atomic.Bool // setup ran: path and setupErr are set
	idOnce    sync.Once   // makes ident, at the first need of the instance id
	ident     string      // the instance id (see InstanceID)

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
	noName    atomic.Pointer[string] // during tryLock without all names: who has one (heldNames.missing)
	selfToken *string                // this process's start token, read once; guarded by mu
	tmpl      []byte                 // the content with a placeholder start time (see content); guarded by mu
	tmplAt    int                    // where the placeholder is in tmpl, -1 when it cannot be used
	stamp     string                 // the placeholder
	pid       int                    // os.Getpid(), read once; guarded by mu
	tmpPrefix string                 // the temporary files' names begin with it (see tempPrefix)
	swept     bool                   // temporary files left by crashes were looked for; guarded by mu

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
	inPlace bool   // written in place on Unix: emptied at Unlock, never removed

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
// at the first call of a method that uses them (TryLock, Lock, Unlock,
// Holder, Running, CleanStale, Terminate), which calls it first. The
// error, for an invalid field, is returned by every method that returns
// one. The other methods never call it: they must not fix the
// configuration before the program has set the fields (see Locker).
func (l *Locker) setup() error {
	l.setupOnce.Do(func() {
		l.setupErr = l.configure()
		l.ready.Store(true)
	})
	return l.setupErr
}

// configure is setup's work.
func (l *Locker) configure() error {
	l.id = l.InstanceID()
	path, err := l.pathNow()
	l.path = path
	if err != nil {
		return err
	}
	l.fsys, l.procs = l.FS, l.Processes
	if l.fsys == nil {
		l.fsys = osFS{}
	}
	if l.procs == nil {
		l.procs = osProcesses{}
	}
	if err := l.checkFields(); err != nil {
		return err
	}
	l.port = l.Port
	switch {
	case l.WatchInterval == 0:
		l.watch = defaultWatchInterval
	case l.WatchInterval < 0:
		l.watch = -1
	case l.WatchInterval < minWatchInterval:
		return fmt.Errorf("instancelock: Locker.WatchInterval is %v: want at least %v, 0 for %v, or negative for no watch "+
			"(a bare number is nanoseconds: write 5 * time.Second, not 5)", l.WatchInterval, minWatchInterval, defaultWatchInterval)
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

// pathNow is the PID file's path as the fields give it now: the path given
// to New ("" is DefaultPath), made absolute (by New, or now for the zero
// Locker) unless FS is set. On an error (the zero Locker, the working
// directory unreadable) it returns the path as given, relative.
func (l *Locker) pathNow() (string, error) {
	path := cmp.Or(l.given, DefaultPath)
	switch {
	case l.FS != nil:
		return path, nil
	case l.abs != "":
		return l.abs, nil
	}
	abs, err := absPath(path)
	if err != nil {
		return path, err
	}
	return abs, nil
}

// checkFields reports an invalid exported field, as TryLock returns it.
// It only reads the fields.
func (l *Locker) checkFields() error {
	if l.Port < 0 || l.Port > 65535 {
		return fmt.Errorf("instancelock: Locker.Port is %d, outside 0..65535: set the port the instance serves on, or 0 for none", l.Port)
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

// Path returns the PID file's path, absolute unless FS is set. Before the
// configuration is fixed (see Locker) it is the path the fields give now;
// Path fixes nothing.
func (l *Locker) Path() string {
	if l.ready.Load() {
		return l.path
	}
	path, _ := l.pathNow()
	return path
}

// InstanceID returns the instance id this Locker writes into the PID file:
// a random UUID, made at the first call that needs it. It stays the same
// across acquisitions by the same Locker. It fixes nothing of the
// configuration (see Locker).
func (l *Locker) InstanceID() string {
	l.idOnce.Do(func() { l.ident = uuid.NewString() })
	return l.ident
}

// Info returns the ProcessLock this Locker published, and whether it holds
// the lock now.
func (l *Locker) Info() (ProcessLock, bool) {
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
// TryLock returns (or, before the configuration is fixed, would return:
// Err fixes nothing). While the lock is held it is a single atomic load.
func (l *Locker) Err() error {
	t := l.last.Load()
	if t == nil {
		if l.ready.Load() {
			return cmp.Or(l.setupErr, ErrNotHeld)
		}
		return cmp.Or(l.checkFields(), ErrNotHeld)
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
// is done; it then returns an error, on one line, that matches both
// context.Cause(ctx) and the last *AlreadyRunningError. On Linux the wait wakes on inotify events on the PID
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
			return fmt.Errorf("%w: %w", context.Cause(ctx), err)
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

func (l *Locker) tryLock() error {
	if !l.byRename {
		if err := l.checkPath(); err != nil {
			return err
		}
	}
	info := l.newInfo()
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
		if names.missing != "" {
			// Rare: a name another process has (see readersBlock).
			missing := names.missing
			l.noName.Store(&missing)
			defer l.noName.Store(nil)
		}
	}
	p, err := l.put(data, names)
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

// newInfo is the ProcessLock of a new holding by this process.
func (l *Locker) newInfo() ProcessLock {
	if l.pid == 0 {
		l.pid = os.Getpid()
	}
	if l.selfToken == nil {
		token, _, _ := l.procs.Start(l.pid)
		l.selfToken = &token
	}
	return ProcessLock{
		PID:        l.pid,
		StartedAt:  time.Now().UTC().Truncate(time.Millisecond),
		Port:       l.port,
		GoVersion:  goVersion,
		InstanceID: l.id,
		Hostname:   l.hostname,
		PIDSpace:   l.pidSpace,
		StartToken: *l.selfToken,
	}
}

// put publishes the PID file with data: the short way when it applies
// (Linux, holding all of the lock's names, see createHeld), else publish.
func (l *Locker) put(data []byte, names heldNames) (published, error) {
	if l.name != "" && names.all(l.name) && l.byRename {
		var p published
		if p.f, p.fi = l.createHeld(data); p.f != nil {
			return p, nil
		}
	}
	return l.publish(data)
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

// unpublish removes path, the file t holds. A file written in place (in
// a directory that does not let us remove it, another user's file, a
// mount point) is emptied instead and left at the path, so that it is
// judged stale at once even while this process lives on, and the next
// start, of whichever user, finds it there.
func (l *Locker) unpublish(t *tenure, path string) error {
	if t.inPlace {
		if err := t.f.Truncate(0); err != nil {
			return l.pathError("truncate", err)
		}
		return nil
	}
	if err := l.fsys.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return l.pathError("remove", err)
	}
	return nil
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
