//go:build !plan9

package instancelocktest

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ad5dec64/instancelock"
	"github.com/ad5dec64/instancelock/internal/inuse"
)

// MemFS is an in-memory instancelock.FS for tests: a Locker whose FS is m
// never touches the disk, and a test can reach the
// failures a real disk rarely shows. It is safe for concurrent use; the zero
// value is an empty file system ready to use.
//
// It follows the rules of the system the program runs on, so that a test
// means there what it says: Windows' on Windows, Unix's elsewhere
// (NewUnixMemFS and NewWindowsMemFS choose). With Windows' rules a file
// that is open (Go opens files without FILE_SHARE_DELETE) cannot be removed
// nor renamed (a sharing violation), a rename does not replace an open file
// or a directory (access denied), a directory's read-only bit does not keep
// entries out, there are no FIFOs, and on Windows the errors are Windows'
// own (ERROR_FILE_NOT_FOUND, ERROR_PATH_NOT_FOUND, ERROR_FILE_EXISTS,
// ERROR_ACCESS_DENIED, ERROR_SHARING_VIOLATION). Names may use either
// separator and a volume name, which is ignored: every name is on the same
// drive, and names are case-sensitive. A Locker on a MemFS publishes its
// PID file the way of the MemFS's system (see WindowsRules).
//
// It behaves as a Unix file system does for the operations of the FS, with
// these simplifications: there is one root, and a relative name is taken
// from it (as if the working directory were /); a file's permission bits are
// checked as for its owner (read 0400, write 0200; a directory without 0200
// refuses to create, remove or rename entries), never as root; there is no
// umask. Symbolic links are followed in the directory part of a name, never
// in the last component. Errors are *fs.PathError values (*os.LinkError for
// Link and Rename) around syscall errno values, as the os package returns
// them, so errors.Is(err, fs.ErrNotExist) and errors.Is(err, syscall.ENOENT)
// both work.
//
// An open file has an offset, an access mode and its own lock: TryLock is
// exclusive, TryRLock shared, and a lock held through another open file
// makes them return instancelock.ErrWouldBlock, as flock(2) does. Closing
// the file drops its lock. Hard links share a file's content and locks, and
// a removed file lives on while it is open.
//
// A test simulates another process by opening the file itself: a handle
// that holds TryLock is a live holder, and closing it is the holder's death.
// When the holder is a Locker, CloseHandles kills it: its open files are
// closed, its locks dropped, its PID file left in place.
//
// Fail, FailNth and Before inject faults into chosen calls; OpenFiles shows
// which files are still open, so a test can check that nothing leaked.
// Symlink, Mkfifo, Chmod, SetModTime, ReadFile, WriteFile and ListDir set up
// and inspect the files; they ignore fault rules and a file's own
// permission bits (a read-only directory still refuses new entries).
//
// MemFS is not available on Plan 9, whose syscall package lacks the errno
// values it uses.
type MemFS struct {
	style memStyle // whose rules; set once, by the constructor
	mu    sync.Mutex
	root  *memNode
	ino   uint64
	files map[*memFile]struct{}
	rules []*memRule
}

// NewMemFS returns an empty in-memory file system with a root directory,
// with the rules of the system the program runs on: Windows' on Windows,
// Unix's elsewhere (as the zero value).
func NewMemFS() *MemFS { return &MemFS{} }

// NewUnixMemFS returns an empty MemFS with Unix's rules on every system.
// A Locker on it publishes its PID file the Unix way (a temporary file
// renamed into place), so that the tests of that code run on Windows too.
func NewUnixMemFS() *MemFS { return &MemFS{style: memUnix} }

// NewWindowsMemFS returns an empty MemFS with Windows' rules on every
// system: a file that is open cannot be removed nor renamed, nor replaced
// by a rename (see MemFS). A Locker on it writes its PID file in place, as
// on Windows, so that the tests of that code run on Unix too.
func NewWindowsMemFS() *MemFS { return &MemFS{style: memWindows} }

// memStyle is whose rules a MemFS follows.
type memStyle int8

const (
	memNative  memStyle = iota // the running system's (the zero value)
	memUnix                    // Unix's
	memWindows                 // Windows'
)

// WindowsRules reports whether m follows Windows' rules (see MemFS): a
// Locker on m then writes its PID file in place, as on Windows, rather than
// renaming a temporary file into place (see instancelock.FS).
func (m *MemFS) WindowsRules() bool { return m.windows() }

// windows reports whether m follows Windows' rules.
func (m *MemFS) windows() bool {
	return m.style == memWindows || m.style == memNative && runtime.GOOS == "windows"
}

// oserr is err as the system whose rules m follows reports it: with
// Windows' rules on Windows, Windows' error numbers (ERROR_FILE_NOT_FOUND
// for ENOENT, ERROR_PATH_NOT_FOUND when the directory part of name is
// missing or not a directory, ERROR_FILE_EXISTS, ERROR_ACCESS_DENIED,
// ERROR_DIR_NOT_EMPTY). Call it with m.mu held.
func (m *MemFS) oserr(name string, err error) error {
	e, ok := err.(syscall.Errno)
	if !ok || !m.windows() {
		return err
	}
	noPath := false
	if e == syscall.ENOENT && name != "" {
		_, _, _, werr := m.walk(name)
		noPath = werr != nil
	}
	return memWinErrno(e, noPath)
}

var (
	_ instancelock.FS   = (*MemFS)(nil)
	_ instancelock.File = (*memFile)(nil)
	_ io.Seeker         = (*memFile)(nil)
	_ io.ReaderAt       = (*memFile)(nil)
	_ io.WriterAt       = (*memFile)(nil)
)

// MemStat is what the Sys method of a FileInfo from a MemFS returns, as a
// *MemStat.
type MemStat struct {
	Ino   uint64 // the file's number, unique in its MemFS and never reused
	Nlink int    // how many names the file has; 0 once removed (it lives on while open)
}

// memNode is an inode: a regular file, a directory, a symbolic link or a
// FIFO.
type memNode struct {
	ino     uint64
	mode    fs.FileMode
	data    []byte              // content of a file, queue of a FIFO
	target  string              // of a symbolic link
	entries map[string]*memNode // of a directory
	nlink   int
	mtime   time.Time
	open    map[*memFile]struct{}
}

// memMaxHops bounds the symbolic links followed in one name, as Linux does.
const memMaxHops = 40

// memOps are the operation names of Fail, FailNth and Before.
var memOps = []string{"open", "lstat", "mkdir", "link", "rename", "remove",
	"read", "write", "seek", "stat", "truncate", "lock", "unlock", "close"}

// memRule is a fault rule (err set) or a hook (fn set).
type memRule struct {
	op, pattern string
	nth, seen   int // nth 0: every call
	err         error
	fn          func()
	running     bool
}

func (r *memRule) matches(op string, names []string) bool {
	if r.op != op {
		return false
	}
	if r.pattern == "" {
		return true
	}
	for _, n := range names {
		if ok, _ := path.Match(r.pattern, memKey(n)); ok {
			return true
		}
	}
	return false
}

// Fail makes every later call of op on a name that matches the pattern name
// fail with err, until Clear, without doing anything else. A nil err removes
// the rules of Fail and FailNth registered with the same op and name.
//
// op is one of "open", "lstat", "mkdir" (MkdirAll), "link", "rename",
// "remove", and, for the methods of an open file, "read" (Read and ReadAt),
// "write" (Write and WriteAt), "seek", "stat", "truncate", "lock" (TryLock
// and TryRLock), "unlock" and "close" (the file is closed all the same, as
// close(2) does). name is a path.Match pattern over cleaned slash-separated
// paths from the root ("/run/app.pid.tmp-*"), matched against the name the
// call was given (for an open file, the name it was opened with; for link
// and rename, either name); "" matches every name. err is returned wrapped
// in an *fs.PathError (*os.LinkError for link and rename): pass an errno
// such as syscall.ENOSPC, syscall.EIO or syscall.EACCES. The first matching
// rule wins. Fail panics on an unknown op or a malformed pattern.
func (m *MemFS) Fail(op, name string, err error) { m.addRule(op, name, 0, err, nil) }

// FailNth makes only the nth (from 1) later call of op on a name that
// matches name fail with err; the calls before and after it run normally.
// FailNth(op, name, 1, err) fails the next one. See Fail for op and name;
// FailNth panics if n < 1.
func (m *MemFS) FailNth(op, name string, n int, err error) {
	if n < 1 {
		panic(fmt.Sprintf("instancelocktest: MemFS.FailNth: n = %d, want 1 or more", n))
	}
	m.addRule(op, name, n, err, nil)
}

// Before runs fn before every later call of op on a name that matches name
// (see Fail), until Clear, as if another process acted just before the
// call: fn may change the file system through m (remove or replace the
// file) and may block. fn runs outside m's lock, and is not run again while
// it runs, so a call it makes that matches its own rule does not recurse.
// Hooks run before the fault rules' errors are returned.
func (m *MemFS) Before(op, name string, fn func()) {
	if fn == nil {
		panic("instancelocktest: MemFS.Before: nil fn")
	}
	m.addRule(op, name, 0, nil, fn)
}

// Clear removes every rule of Fail, FailNth and Before.
func (m *MemFS) Clear() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rules = nil
}

func (m *MemFS) addRule(op, name string, nth int, err error, fn func()) {
	if !slices.Contains(memOps, op) {
		panic(fmt.Sprintf("instancelocktest: MemFS: unknown op %q (want one of %s)", op, strings.Join(memOps, ", ")))
	}
	pattern := ""
	if name != "" {
		pattern = memKey(name)
		if _, perr := path.Match(pattern, ""); perr != nil {
			panic(fmt.Sprintf("instancelocktest: MemFS: pattern %q: %v", name, perr))
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if fn == nil && err == nil {
		m.rules = slices.DeleteFunc(m.rules, func(r *memRule) bool {
			return r.fn == nil && r.op == op && r.pattern == pattern
		})
		return
	}
	m.rules = append(m.rules, &memRule{op: op, pattern: pattern, nth: nth, err: err, fn: fn})
}

// hook runs the hooks that match the call and returns the error of the
// first fault rule that fires, or nil.
func (m *MemFS) hook(op string, names ...string) error {
	m.mu.Lock()
	var hooks []*memRule
	var err error
	for _, r := range m.rules {
		if !r.matches(op, names) {
			continue
		}
		if r.fn != nil {
			if !r.running {
				r.running = true
				hooks = append(hooks, r)
			}
			continue
		}
		if r.nth > 0 {
			r.seen++
			if r.seen != r.nth {
				continue
			}
		}
		if err == nil {
			err = r.err
		}
	}
	m.mu.Unlock()
	for _, r := range hooks {
		r.fn()
		m.mu.Lock()
		r.running = false
		m.mu.Unlock()
	}
	return err
}

// memKey is the cleaned, slash-separated, rooted form of name.
func memKey(name string) string { return "/" + strings.Join(memSplit(name), "/") }

// memSplit returns the components of name from the root.
func memSplit(name string) []string {
	c := filepath.Clean(name)
	c = filepath.ToSlash(c[len(filepath.VolumeName(c)):])
	var out []string
	for _, e := range strings.Split(c, "/") {
		// Clean leaves ".." only at the start of a relative name: it
		// climbs above the root, which is its own parent.
		if e != "" && e != "." && e != ".." {
			out = append(out, e)
		}
	}
	return out
}

func (m *MemFS) rootLocked() *memNode {
	if m.root == nil {
		m.root = m.newNode(fs.ModeDir | 0o755)
		m.root.nlink = 1
	}
	return m.root
}

func (m *MemFS) newNode(mode fs.FileMode) *memNode {
	m.ino++
	n := &memNode{ino: m.ino, mode: mode, mtime: time.Now()}
	if mode.IsDir() {
		n.entries = map[string]*memNode{}
	}
	return n
}

// walk resolves the directory part of name, following symbolic links, and
// returns the directory, its components and the last component of name
// ("" when name is the root itself).
func (m *MemFS) walk(name string) (dir *memNode, dirComps []string, base string, err error) {
	if name == "" {
		return nil, nil, "", syscall.ENOENT
	}
	comps := memSplit(name)
	hops := 0
restart:
	dir = m.rootLocked()
	if len(comps) == 0 {
		return dir, nil, "", nil
	}
	for i, c := range comps[:len(comps)-1] {
		n := dir.entries[c]
		switch {
		case n == nil:
			return nil, nil, "", syscall.ENOENT
		case n.mode&fs.ModeSymlink != 0:
			if hops++; hops > memMaxHops {
				return nil, nil, "", syscall.ELOOP
			}
			comps = append(memLinkTarget(comps[:i], n.target), comps[i+1:]...)
			goto restart
		case !n.mode.IsDir():
			return nil, nil, "", syscall.ENOTDIR
		}
		dir = n
	}
	return dir, comps[:len(comps)-1], comps[len(comps)-1], nil
}

// linkTarget returns the components of a symbolic link's target, for a
// link in the directory dirComps.
func memLinkTarget(dirComps []string, target string) []string {
	if strings.HasPrefix(filepath.ToSlash(target), "/") || filepath.IsAbs(target) {
		return memSplit(target)
	}
	return memSplit(strings.Join(dirComps, "/") + "/" + target)
}

// lookup returns the node at name; a symbolic link in the last component is
// followed when follow is set.
func (m *MemFS) lookup(name string, follow bool) (*memNode, error) {
	for hops := 0; ; hops++ {
		dir, dirComps, base, err := m.walk(name)
		if err != nil {
			return nil, err
		}
		if base == "" {
			return dir, nil
		}
		n := dir.entries[base]
		switch {
		case n == nil:
			return nil, syscall.ENOENT
		case !follow || n.mode&fs.ModeSymlink == 0:
			return n, nil
		case hops >= memMaxHops:
			return nil, syscall.ELOOP
		}
		name = "/" + strings.Join(memLinkTarget(dirComps, n.target), "/")
	}
}

// entry returns the directory of name, its last component and the node
// there (nil if none). The root is its own entry, with base "".
func (m *MemFS) entry(name string) (dir *memNode, base string, n *memNode, err error) {
	dir, _, base, err = m.walk(name)
	switch {
	case err != nil:
		return nil, "", nil, err
	case base == "":
		return dir, "", dir, nil
	}
	return dir, base, dir.entries[base], nil
}

func memWritable(n *memNode) bool { return n.mode&0o200 != 0 }

// dirWritable reports whether entries may be made in or removed from dir:
// Windows ignores the read-only attribute of a directory.
func (m *MemFS) dirWritable(dir *memNode) bool { return memWritable(dir) || m.windows() }

func (m *MemFS) linkLocked(dir *memNode, base string, n *memNode) {
	dir.entries[base] = n
	n.nlink++
	dir.mtime = time.Now()
}

func (m *MemFS) unlinkLocked(dir *memNode, base string) {
	n := dir.entries[base]
	delete(dir.entries, base)
	n.nlink--
	dir.mtime = time.Now()
}

// create makes a new node at name, whose parent must exist and be writable.
func (m *MemFS) create(name string, mode fs.FileMode) (*memNode, error) {
	dir, base, n, err := m.entry(name)
	switch {
	case err != nil:
		return nil, err
	case n != nil:
		return nil, syscall.EEXIST
	case !m.dirWritable(dir):
		return nil, syscall.EACCES
	}
	n = m.newNode(mode)
	m.linkLocked(dir, base, n)
	return n, nil
}

func memStatInfo(fsys *MemFS, name string, n *memNode) fs.FileInfo {
	size := int64(len(n.data))
	switch {
	case n.mode.IsDir():
		size = 0
	case n.mode&fs.ModeSymlink != 0:
		size = int64(len(n.target))
	}
	base := filepath.Base(name)
	return &memInfo{fsys: fsys, name: base, size: size, mode: n.mode, mtime: n.mtime,
		stat: MemStat{Ino: n.ino, Nlink: n.nlink}}
}

type memInfo struct {
	fsys  *MemFS
	name  string
	size  int64
	mode  fs.FileMode
	mtime time.Time
	stat  MemStat
}

func (i *memInfo) Name() string       { return i.name }
func (i *memInfo) Size() int64        { return i.size }
func (i *memInfo) Mode() fs.FileMode  { return i.mode }
func (i *memInfo) ModTime() time.Time { return i.mtime }
func (i *memInfo) IsDir() bool        { return i.mode.IsDir() }
func (i *memInfo) Sys() any           { s := i.stat; return &s }

// OpenFile implements FS. It honours os.O_RDONLY, os.O_WRONLY, os.O_RDWR,
// os.O_CREATE (the file is made with perm's permission bits), os.O_EXCL
// (fs.ErrExist when name exists, even as a symbolic link), os.O_TRUNC and
// os.O_APPEND. A symbolic link in the last component is never followed
// (syscall.ELOOP); a directory opens read-only (syscall.EISDIR otherwise); a
// FIFO opens at once, but not write-only (syscall.ENXIO, as if no reader
// had it open), and reads what was written to it.
func (m *MemFS) OpenFile(name string, flag int, perm fs.FileMode) (instancelock.File, error) {
	if err := m.hook("open", name); err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	f, err := m.open(name, flag, perm)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: m.oserr(name, err)}
	}
	return f, nil
}

func (m *MemFS) open(name string, flag int, perm fs.FileMode) (*memFile, error) {
	acc := flag & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)
	rd := acc == os.O_RDONLY || acc == os.O_RDWR
	wr := acc == os.O_WRONLY || acc == os.O_RDWR
	trunc := flag&os.O_TRUNC != 0
	_, _, n, err := m.entry(name)
	switch {
	case err != nil:
		return nil, err
	case n == nil && flag&os.O_CREATE == 0:
		return nil, syscall.ENOENT
	case n == nil:
		if n, err = m.create(name, perm&fs.ModePerm); err != nil {
			return nil, err
		}
	case flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		return nil, syscall.EEXIST
	case n.mode&fs.ModeSymlink != 0:
		return nil, syscall.ELOOP
	case n.mode.IsDir() && (wr || trunc):
		return nil, syscall.EISDIR
	case rd && n.mode&0o400 == 0, (wr || trunc) && !memWritable(n):
		return nil, syscall.EACCES
	case n.mode&fs.ModeNamedPipe != 0 && acc == os.O_WRONLY:
		return nil, syscall.ENXIO
	case trunc && n.mode.IsRegular():
		n.data = nil
		n.mtime = time.Now()
	}
	f := &memFile{fs: m, name: name, node: n, rd: rd, wr: wr, app: flag&os.O_APPEND != 0}
	if n.open == nil {
		n.open = map[*memFile]struct{}{}
	}
	n.open[f] = struct{}{}
	if m.files == nil {
		m.files = map[*memFile]struct{}{}
	}
	m.files[f] = struct{}{}
	return f, nil
}

// Lstat implements FS: it describes name without following a symbolic link
// in its last component. FileInfo.Sys returns a *MemStat.
func (m *MemFS) Lstat(name string) (fs.FileInfo, error) {
	if err := m.hook("lstat", name); err != nil {
		return nil, &fs.PathError{Op: "lstat", Path: name, Err: err}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup(name, false)
	if err != nil {
		return nil, &fs.PathError{Op: "lstat", Path: name, Err: m.oserr(name, err)}
	}
	return memStatInfo(m, name, n), nil
}

// MkdirAll implements FS as os.MkdirAll does: it creates the missing
// directories of name with perm's permission bits, follows symbolic links
// to directories, returns nil when name already is a directory and
// syscall.ENOTDIR when a component is something else.
func (m *MemFS) MkdirAll(name string, perm fs.FileMode) error {
	if err := m.hook("mkdir", name); err != nil {
		return &fs.PathError{Op: "mkdir", Path: name, Err: err}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if name == "" {
		return &fs.PathError{Op: "mkdir", Path: name, Err: syscall.ENOENT}
	}
	comps := memSplit(name)
	for i := 1; i <= len(comps); i++ {
		p := "/" + strings.Join(comps[:i], "/")
		n, err := m.lookup(p, true)
		switch {
		case err == nil && n.mode.IsDir():
			continue
		case err == nil:
			err = syscall.ENOTDIR
		case errors.Is(err, syscall.ENOENT):
			_, err = m.create(p, fs.ModeDir|perm&fs.ModePerm)
		}
		if err != nil {
			return &fs.PathError{Op: "mkdir", Path: filepath.FromSlash(p), Err: m.oserr(p, err)}
		}
	}
	return nil
}

// Link implements FS: newname becomes another name of the file oldname (a
// symbolic link itself, not its target). It fails with syscall.EEXIST when
// newname exists and syscall.EPERM when oldname is a directory.
func (m *MemFS) Link(oldname, newname string) error {
	if err := m.hook("link", oldname, newname); err != nil {
		return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: err}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	err := m.link(oldname, newname)
	if err != nil {
		return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: m.oserr(newname, err)}
	}
	return nil
}

func (m *MemFS) link(oldname, newname string) error {
	n, err := m.lookup(oldname, false)
	if err != nil {
		return err
	}
	dir, base, there, err := m.entry(newname)
	switch {
	case err != nil:
		return err
	case there != nil:
		return syscall.EEXIST
	case n.mode.IsDir():
		return syscall.EPERM
	case !m.dirWritable(dir):
		return syscall.EACCES
	}
	m.linkLocked(dir, base, n)
	return nil
}

// Rename implements FS as os.Rename does on Unix: a file at newname is
// replaced atomically; renaming a file onto another name of itself does
// nothing; an existing directory at newname is refused (syscall.EEXIST); a
// directory cannot replace a file (syscall.ENOTDIR) nor move below itself
// (syscall.EINVAL).
func (m *MemFS) Rename(oldname, newname string) error {
	if err := m.hook("rename", oldname, newname); err != nil {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: err}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.rename(oldname, newname); err != nil {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: m.oserr(newname, err)}
	}
	return nil
}

func (m *MemFS) rename(oldname, newname string) error {
	odir, obase, n, err := m.entry(oldname)
	if err != nil {
		return err
	}
	if n == nil {
		return syscall.ENOENT
	}
	ndir, nbase, old, err := m.entry(newname)
	switch {
	case err != nil:
		return err
	case obase == "" || nbase == "":
		return syscall.EBUSY
	case old == n:
		return nil
	case m.windows() && len(n.open) > 0:
		return inuse.Err // opened without FILE_SHARE_DELETE
	case m.windows() && old != nil && (old.mode.IsDir() || len(old.open) > 0):
		return syscall.EACCES // MoveFileEx does not replace these
	case !m.dirWritable(odir) || !m.dirWritable(ndir):
		return syscall.EACCES
	case old != nil && old.mode.IsDir():
		return syscall.EEXIST
	case n.mode.IsDir() && old != nil:
		return syscall.ENOTDIR
	case n.mode.IsDir() && memContains(n, ndir):
		return syscall.EINVAL
	}
	if old != nil {
		m.unlinkLocked(ndir, nbase)
	}
	delete(odir.entries, obase)
	ndir.entries[nbase] = n
	return nil
}

// contains reports whether dir is d or below it.
func memContains(d, dir *memNode) bool {
	if d == dir {
		return true
	}
	for _, e := range d.entries {
		if e.mode.IsDir() && memContains(e, dir) {
			return true
		}
	}
	return false
}

// Remove implements FS as os.Remove does: it removes a file, a symbolic
// link, a FIFO or an empty directory (syscall.ENOTEMPTY otherwise). Open
// files of a removed file keep working.
func (m *MemFS) Remove(name string) error {
	if err := m.hook("remove", name); err != nil {
		return &fs.PathError{Op: "remove", Path: name, Err: err}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	dir, base, n, err := m.entry(name)
	switch {
	case err != nil:
	case n == nil:
		err = syscall.ENOENT
	case base == "":
		err = syscall.EBUSY
	case !m.dirWritable(dir):
		err = syscall.EACCES
	case m.windows() && len(n.open) > 0:
		err = inuse.Err // opened without FILE_SHARE_DELETE
	case len(n.entries) > 0:
		err = syscall.ENOTEMPTY
	}
	if err != nil {
		return &fs.PathError{Op: "remove", Path: name, Err: m.oserr(name, err)}
	}
	m.unlinkLocked(dir, base)
	return nil
}

// SameFile implements FS: it reports whether a and b, returned by this
// MemFS, describe the same file.
func (m *MemFS) SameFile(a, b fs.FileInfo) bool {
	x, ok1 := a.(*memInfo)
	y, ok2 := b.(*memInfo)
	return ok1 && ok2 && x.fsys == m && y.fsys == m && x.stat.Ino == y.stat.Ino
}

// CloseHandles simulates the death of the processes that have the file at
// name open: it closes every open file of it (under any of its names), which
// drops their locks, and returns how many it closed. The file itself stays.
// A symbolic link in the last component is not followed; a name that does
// not exist closes nothing. Later calls on the closed files fail as on a
// closed *os.File. A Locker whose file was closed this way must not be
// unlocked (its process is "dead"); give it a negative WatchInterval so
// that no watcher keeps running.
func (m *MemFS) CloseHandles(name string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup(name, false)
	if err != nil {
		return 0
	}
	count := 0
	for f := range n.open {
		f.closeLocked()
		count++
	}
	return count
}

// OpenFiles returns the names (as given to OpenFile) of the files that are
// open now, sorted: after a Locker's failed attempt it should hold none.
func (m *MemFS) OpenFiles() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var names []string
	for f := range m.files {
		names = append(names, f.name)
	}
	slices.Sort(names)
	return names
}

// Symlink creates name as a symbolic link to target, as os.Symlink does:
// syscall.EEXIST when name exists, syscall.ENOENT for an empty target.
func (m *MemFS) Symlink(target, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var err error
	if target == "" {
		err = syscall.ENOENT
	} else {
		var n *memNode
		if n, err = m.create(name, fs.ModeSymlink|0o777); err == nil {
			n.target = target
		}
	}
	if err != nil {
		return &os.LinkError{Op: "symlink", Old: target, New: name, Err: err}
	}
	return nil
}

// Mkfifo creates name as a named pipe (mode fs.ModeNamedPipe|0644), as
// mkfifo(3) does: syscall.EEXIST when name exists.
func (m *MemFS) Mkfifo(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.windows() {
		return &fs.PathError{Op: "mkfifo", Path: name, Err: errors.ErrUnsupported}
	}
	if _, err := m.create(name, fs.ModeNamedPipe|0o644); err != nil {
		return &fs.PathError{Op: "mkfifo", Path: name, Err: err}
	}
	return nil
}

// Chmod sets the permission bits of name (a symbolic link in the last
// component is not followed). A directory without 0200 refuses new entries,
// removals and renames with syscall.EACCES; a file without 0400 or 0200
// refuses to open for reading or writing.
func (m *MemFS) Chmod(name string, mode fs.FileMode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup(name, false)
	if err != nil {
		return &fs.PathError{Op: "chmod", Path: name, Err: err}
	}
	n.mode = n.mode&^fs.ModePerm | mode&fs.ModePerm
	return nil
}

// SetModTime sets the modification time of name (a symbolic link in the
// last component is not followed).
func (m *MemFS) SetModTime(name string, t time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup(name, false)
	if err != nil {
		return &fs.PathError{Op: "chtimes", Path: name, Err: err}
	}
	n.mtime = t
	return nil
}

// ReadFile returns a copy of the content of the file name: a regular file
// or a FIFO (what was written to it and not read yet). It fails with
// syscall.EISDIR on a directory and syscall.ELOOP on a symbolic link.
func (m *MemFS) ReadFile(name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup(name, false)
	switch {
	case err != nil:
	case n.mode.IsDir():
		err = syscall.EISDIR
	case n.mode&fs.ModeSymlink != 0:
		err = syscall.ELOOP
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return slices.Clone(n.data), nil
}

// WriteFile sets the content of the regular file name, creating it with
// perm's permission bits if needed (its directory must exist). An existing
// file keeps its identity, so its open files see the new content; a
// symbolic link in the last component fails with syscall.ELOOP, a directory
// with syscall.EISDIR, another file type with syscall.EINVAL. It takes no
// lock, like a tool that ignores them.
func (m *MemFS) WriteFile(name string, data []byte, perm fs.FileMode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, _, n, err := m.entry(name)
	switch {
	case err != nil:
	case n == nil:
		n, err = m.create(name, perm&fs.ModePerm)
	case n.mode&fs.ModeSymlink != 0:
		err = syscall.ELOOP
	case n.mode.IsDir():
		err = syscall.EISDIR
	case !n.mode.IsRegular():
		err = syscall.EINVAL
	}
	if err != nil {
		return &fs.PathError{Op: "open", Path: name, Err: err}
	}
	n.data = slices.Clone(data)
	n.mtime = time.Now()
	return nil
}

// ListDir returns the sorted names in the directory name (a symbolic link in
// the last component is not followed): syscall.ENOTDIR if it is not a
// directory.
func (m *MemFS) ListDir(name string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup(name, false)
	if err == nil && !n.mode.IsDir() {
		err = syscall.ENOTDIR
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	names := make([]string, 0, len(n.entries))
	for e := range n.entries {
		names = append(names, e)
	}
	slices.Sort(names)
	return names, nil
}

// memFile is an open file of a MemFS. Its fields after name are guarded by
// fs.mu.
type memFile struct {
	fs       *MemFS
	name     string
	node     *memNode
	rd, wr   bool
	app      bool
	off      int64
	closed   bool
	excl, sh bool // the lock this open file holds
}

const (
	memOpFlock   = "flock"
	memOpFunlock = "funlock"
)

func (f *memFile) pathErr(op string, err error) error {
	return &fs.PathError{Op: op, Path: f.name, Err: err}
}

// usable returns the error of an operation on a closed file, or through an
// access mode the file was not opened with.
func (f *memFile) usable(op string, allowed bool) error {
	switch {
	case f.closed:
		return f.pathErr(op, os.ErrClosed)
	case !allowed:
		return f.pathErr(op, syscall.EBADF)
	}
	return nil
}

func (f *memFile) isFIFO() bool { return f.node.mode&fs.ModeNamedPipe != 0 }

// Name returns the name the file was opened with.
func (f *memFile) Name() string { return f.name }

func (f *memFile) Read(p []byte) (int, error) {
	if err := f.fs.hook("read", f.name); err != nil {
		return 0, f.pathErr("read", err)
	}
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.usable("read", f.rd); err != nil {
		return 0, err
	}
	n := f.node
	switch {
	case n.mode.IsDir():
		return 0, f.pathErr("read", syscall.EISDIR)
	case len(p) == 0:
		return 0, nil
	case f.isFIFO():
		k := copy(p, n.data)
		n.data = n.data[k:]
		if k == 0 {
			return 0, io.EOF
		}
		return k, nil
	case f.off >= int64(len(n.data)):
		return 0, io.EOF
	}
	k := copy(p, n.data[f.off:])
	f.off += int64(k)
	return k, nil
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.fs.hook("read", f.name); err != nil {
		return 0, f.pathErr("read", err)
	}
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.usable("read", f.rd); err != nil {
		return 0, err
	}
	n := f.node
	switch {
	case off < 0:
		return 0, f.pathErr("readat", errors.New("negative offset"))
	case n.mode.IsDir():
		return 0, f.pathErr("read", syscall.EISDIR)
	case f.isFIFO():
		return 0, f.pathErr("read", syscall.ESPIPE)
	}
	k := 0
	if off < int64(len(n.data)) {
		k = copy(p, n.data[off:])
	}
	if k < len(p) {
		return k, io.EOF
	}
	return k, nil
}

func (f *memFile) Write(p []byte) (int, error) {
	if err := f.fs.hook("write", f.name); err != nil {
		return 0, f.pathErr("write", err)
	}
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.usable("write", f.wr); err != nil {
		return 0, err
	}
	if f.isFIFO() {
		f.node.data = append(f.node.data, p...)
		return len(p), nil
	}
	if f.app {
		f.off = int64(len(f.node.data))
	}
	f.writeAt(p, f.off)
	f.off += int64(len(p))
	return len(p), nil
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.fs.hook("write", f.name); err != nil {
		return 0, f.pathErr("write", err)
	}
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.usable("write", f.wr); err != nil {
		return 0, err
	}
	switch {
	case f.app:
		return 0, errors.New("os: invalid use of WriteAt on file opened with O_APPEND")
	case off < 0:
		return 0, f.pathErr("writeat", errors.New("negative offset"))
	case f.isFIFO():
		return 0, f.pathErr("write", syscall.ESPIPE)
	}
	f.writeAt(p, off)
	return len(p), nil
}

func (f *memFile) writeAt(p []byte, off int64) {
	n := f.node
	if end := off + int64(len(p)); end > int64(len(n.data)) {
		n.data = append(n.data, make([]byte, end-int64(len(n.data)))...)
	}
	copy(n.data[off:], p)
	n.mtime = time.Now()
}

func (f *memFile) Seek(offset int64, whence int) (int64, error) {
	if err := f.fs.hook("seek", f.name); err != nil {
		return 0, f.pathErr("seek", err)
	}
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.usable("seek", true); err != nil {
		return 0, err
	}
	if f.isFIFO() {
		return 0, f.pathErr("seek", syscall.ESPIPE)
	}
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.off
	case io.SeekEnd:
		offset += int64(len(f.node.data))
	default:
		return 0, f.pathErr("seek", syscall.EINVAL)
	}
	if offset < 0 {
		return 0, f.pathErr("seek", syscall.EINVAL)
	}
	f.off = offset
	return offset, nil
}

func (f *memFile) Stat() (fs.FileInfo, error) {
	if err := f.fs.hook("stat", f.name); err != nil {
		return nil, f.pathErr("stat", err)
	}
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.usable("stat", true); err != nil {
		return nil, err
	}
	return memStatInfo(f.fs, f.name, f.node), nil
}

// Truncate changes the size of the file, as ftruncate(2): syscall.EINVAL
// unless it is a regular file opened for writing and size >= 0.
func (f *memFile) Truncate(size int64) error {
	if err := f.fs.hook("truncate", f.name); err != nil {
		return f.pathErr("truncate", err)
	}
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.usable("truncate", true); err != nil {
		return err
	}
	n := f.node
	if !f.wr || size < 0 || !n.mode.IsRegular() {
		return f.pathErr("truncate", syscall.EINVAL)
	}
	if size <= int64(len(n.data)) {
		n.data = n.data[:size:size]
	} else {
		n.data = append(n.data, make([]byte, size-int64(len(n.data)))...)
	}
	n.mtime = time.Now()
	return nil
}

// TryLock takes the exclusive lock of the file for this open file, or
// returns instancelock.ErrWouldBlock if another open file of it holds a lock. A shared
// lock this open file holds is converted; as on Linux, a conversion that
// fails drops it.
func (f *memFile) TryLock() error { return f.lock(true) }

// TryRLock takes a shared lock, or returns instancelock.ErrWouldBlock if
// another open
// file holds the exclusive lock. An exclusive lock this open file holds is
// converted.
func (f *memFile) TryRLock() error { return f.lock(false) }

func (f *memFile) lock(exclusive bool) error {
	if err := f.fs.hook("lock", f.name); err != nil {
		return f.pathErr(memOpFlock, err)
	}
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.usable(memOpFlock, true); err != nil {
		return err
	}
	for o := range f.node.open {
		if o != f && (o.excl || exclusive && o.sh) {
			f.excl, f.sh = false, false // a failed conversion drops the lock, as on Linux
			return instancelock.ErrWouldBlock
		}
	}
	f.excl, f.sh = exclusive, !exclusive
	return nil
}

// Unlock drops the lock this open file holds, if any.
func (f *memFile) Unlock() error {
	if err := f.fs.hook("unlock", f.name); err != nil {
		return f.pathErr(memOpFunlock, err)
	}
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.usable(memOpFunlock, true); err != nil {
		return err
	}
	f.excl, f.sh = false, false
	return nil
}

// Close closes the file and drops its lock. A second Close fails with an
// error matching os.ErrClosed.
func (f *memFile) Close() error {
	herr := f.fs.hook("close", f.name)
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.usable("close", true); err != nil {
		return err
	}
	f.closeLocked()
	if herr != nil {
		return f.pathErr("close", herr)
	}
	return nil
}

func (f *memFile) closeLocked() {
	f.closed = true
	f.excl, f.sh = false, false
	delete(f.node.open, f)
	delete(f.fs.files, f)
}
