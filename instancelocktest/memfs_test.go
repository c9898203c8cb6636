//go:build !plan9

package instancelocktest

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock"
)

// TestMemFSErrorsMatchOS checks that MemFS errors match the io/fs
// sentinels as the os package's do.
func TestMemFSErrorsMatchOS(t *testing.T) {
	m := NewUnixMemFS()
	_, err := m.OpenFile("/missing", os.O_RDONLY, 0)
	if !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, syscall.ENOENT) {
		t.Errorf("open of a missing file: %v does not match fs.ErrNotExist and ENOENT", err)
	}
	if err := m.WriteFile("/a", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = m.OpenFile("/a", memCreateExcl, 0o644)
	if !errors.Is(err, fs.ErrExist) {
		t.Errorf("exclusive create of an existing file: %v does not match fs.ErrExist", err)
	}
	if err := m.Link("/a", "/a"); !errors.Is(err, fs.ErrExist) {
		t.Errorf("link onto an existing name: %v does not match fs.ErrExist", err)
	}
	if err := m.MkdirAll("/ro", 0o555); err != nil {
		t.Fatal(err)
	}
	_, err = m.OpenFile("/ro/a", memCreateExcl, 0o644)
	if !errors.Is(err, fs.ErrPermission) || !errors.Is(err, syscall.EACCES) {
		t.Errorf("create in a read-only directory: %v does not match fs.ErrPermission and EACCES", err)
	}
	var pe *fs.PathError
	if !errors.As(err, &pe) || pe.Op != "open" || pe.Path != "/ro/a" {
		t.Errorf("create in a read-only directory: %#v is not a PathError naming the path", err)
	}
}

func TestMemFSPermissions(t *testing.T) {
	m := NewUnixMemFS()
	memMust(t, m.MkdirAll("/d/sub", 0o755))
	memMust(t, m.WriteFile("/d/a", []byte("x"), 0o644))
	memMust(t, m.WriteFile("/b", []byte("x"), 0o644))
	memMust(t, m.Chmod("/d", 0o555))
	for _, c := range []struct {
		what string
		err  error
	}{
		{"create", memOpenErr(m.OpenFile("/d/new", memCreateExcl, 0o644))},
		{"mkdir", m.MkdirAll("/d/new", 0o755)},
		{"remove", m.Remove("/d/a")},
		{"rename out", m.Rename("/d/a", "/a")},
		{"rename in", m.Rename("/b", "/d/b")},
		{"link in", m.Link("/b", "/d/b")},
		{"symlink", m.Symlink("x", "/d/l")},
		{"mkfifo", m.Mkfifo("/d/p")},
		{"write file", m.WriteFile("/d/new", nil, 0o644)},
	} {
		if !errors.Is(c.err, syscall.EACCES) {
			t.Errorf("%s in a read-only directory: got %v, want EACCES", c.what, c.err)
		}
	}
	// Files in it can still be written, and created below a writable
	// subdirectory.
	f, err := m.OpenFile("/d/a", os.O_RDWR, 0)
	memMust(t, err)
	memMust(t, f.Close())
	memMust(t, m.WriteFile("/d/sub/c", nil, 0o644))

	memMust(t, m.Chmod("/b", 0o200))
	if _, err := m.OpenFile("/b", os.O_RDONLY, 0); !errors.Is(err, syscall.EACCES) {
		t.Errorf("open for reading of a write-only file: got %v, want EACCES", err)
	}
	memMust(t, m.Chmod("/b", 0o400))
	for _, flag := range []int{os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC} {
		if _, err := m.OpenFile("/b", flag, 0); !errors.Is(err, syscall.EACCES) {
			t.Errorf("open(%#x) of a read-only file: got %v, want EACCES", flag, err)
		}
	}
	if data, err := m.ReadFile("/b"); err != nil || string(data) != "x" {
		t.Errorf("ReadFile = %q, %v: the truncating open changed the file", data, err)
	}
	fi, err := m.Lstat("/b")
	memMust(t, err)
	if fi.Mode() != 0o400 {
		t.Errorf("mode after Chmod = %v, want -r--------", fi.Mode())
	}
	if err := m.Chmod("/missing", 0o644); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Chmod of a missing file: got %v", err)
	}
}

func TestMemFSFIFO(t *testing.T) {
	m := NewUnixMemFS()
	memMust(t, m.Mkfifo("/p"))
	if err := m.Mkfifo("/p"); !errors.Is(err, fs.ErrExist) {
		t.Errorf("memErr2 Mkfifo: got %v, want EEXIST", err)
	}
	fi, err := m.Lstat("/p")
	memMust(t, err)
	if fi.Mode() != fs.ModeNamedPipe|0o644 || fi.Mode().IsRegular() {
		t.Errorf("FIFO mode = %v", fi.Mode())
	}
	if _, err := m.OpenFile("/p", os.O_WRONLY, 0); !errors.Is(err, syscall.ENXIO) {
		t.Errorf("write-only open of a FIFO without reader: got %v, want ENXIO", err)
	}
	f, err := m.OpenFile("/p", os.O_RDWR, 0)
	memMust(t, err)
	defer f.Close()
	buf := make([]byte, 8)
	if n, err := f.Read(buf); n != 0 || err != io.EOF {
		t.Errorf("read of an empty FIFO = %d, %v; want 0, EOF", n, err)
	}
	if _, err := f.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	if data, err := m.ReadFile("/p"); string(data) != "abc" || err != nil {
		t.Errorf("ReadFile of the FIFO = %q, %v", data, err)
	}
	if n, err := f.Read(buf[:2]); string(buf[:n]) != "ab" || err != nil {
		t.Errorf("read = %q, %v; want ab", buf[:n], err)
	}
	if n, err := f.Read(buf); string(buf[:n]) != "c" || err != nil {
		t.Errorf("read = %q, %v; want c", buf[:n], err)
	}
	for what, err := range map[string]error{
		"ReadAt":   memErr2(f.(io.ReaderAt).ReadAt(buf, 0)),
		"WriteAt":  memErr2(f.(io.WriterAt).WriteAt(buf, 0)),
		"Seek":     memErr2(f.(io.Seeker).Seek(0, io.SeekStart)),
		"Truncate": f.Truncate(0),
	} {
		if !errors.Is(err, syscall.ESPIPE) && !errors.Is(err, syscall.EINVAL) {
			t.Errorf("%s on a FIFO: got %v, want ESPIPE or EINVAL", what, err)
		}
	}
	if err := m.WriteFile("/p", nil, 0); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("WriteFile on a FIFO: got %v, want EINVAL", err)
	}
}

func TestMemFSEdgeCases(t *testing.T) {
	var z MemFS // the zero value is ready to use, with this system's rules
	memMust(t, z.MkdirAll("/a", 0o755))
	if z.WindowsRules() != (runtime.GOOS == "windows") || NewMemFS().WindowsRules() != z.WindowsRules() {
		t.Errorf("the zero value and NewMemFS follow Windows' rules: %v, %v; on %s", z.WindowsRules(), NewMemFS().WindowsRules(), runtime.GOOS)
	}
	if NewUnixMemFS().WindowsRules() || !NewWindowsMemFS().WindowsRules() {
		t.Error("NewUnixMemFS or NewWindowsMemFS follow the wrong rules")
	}
	m := NewUnixMemFS()
	if _, err := m.OpenFile("", os.O_RDONLY, 0); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("open of the empty name: got %v", err)
	}
	if err := m.MkdirAll("", 0o755); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("MkdirAll of the empty name: got %v", err)
	}
	// Relative names are taken from the root; so are names climbing
	// above it.
	memMust(t, m.MkdirAll("data", 0o755))
	memMust(t, m.WriteFile("./data/x", []byte("1"), 0o644))
	for _, name := range []string{"/data/../../data/x", "../../data/x", "data/./x"} {
		if data, err := m.ReadFile(name); string(data) != "1" || err != nil {
			t.Errorf("ReadFile(%s) = %q, %v", name, data, err)
		}
	}
	if err := m.Mkfifo("/no/p"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Mkfifo in a missing directory: got %v", err)
	}
	fi, err := m.Lstat("/")
	memMust(t, err)
	if !fi.IsDir() || fi.Name() != string(filepath.Separator) {
		t.Errorf("root = %v %q", fi.Mode(), fi.Name())
	}
	root, err := m.OpenFile("/", os.O_RDONLY, 0)
	memMust(t, err)
	memMust(t, root.Close())
	if err := m.Remove("/"); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("Remove of the root: got %v, want EBUSY", err)
	}
	if err := m.Rename("/data", "/"); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("Rename onto the root: got %v, want EBUSY", err)
	}
	// A dangling symbolic link in MkdirAll's way is not a directory.
	memMust(t, m.Symlink("/nowhere", "/dangling"))
	if err := m.MkdirAll("/dangling/x", 0o755); !errors.Is(err, fs.ErrExist) {
		t.Errorf("MkdirAll through a dangling link: got %v, want EEXIST", err)
	}
	if err := m.Symlink("", "/empty"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Symlink to an empty target: got %v, want ENOENT", err)
	}
	memMust(t, m.Symlink("self", "/self"))
	if err := m.MkdirAll("/self", 0o755); !errors.Is(err, syscall.ELOOP) {
		t.Errorf("MkdirAll of a link to itself: got %v, want ELOOP", err)
	}
	for what, err := range map[string]error{
		"ReadFile symlink":  memErr2(m.ReadFile("/dangling")),
		"ReadFile dir":      memErr2(m.ReadFile("/data")),
		"ReadFile missing":  memErr2(m.ReadFile("/missing")),
		"WriteFile symlink": m.WriteFile("/dangling", nil, 0o644),
		"WriteFile dir":     m.WriteFile("/data", nil, 0o644),
		"WriteFile no dir":  m.WriteFile("/no/x", nil, 0o644),
		"ListDir file":      memErr2(m.ListDir("/data/x")),
		"ListDir missing":   memErr2(m.ListDir("/missing")),
		"SetModTime":        m.SetModTime("/missing", time.Now()),
	} {
		if err == nil {
			t.Errorf("%s succeeded", what)
		}
		var pe *fs.PathError
		if !errors.As(err, &pe) {
			t.Errorf("%s: %v is not an *fs.PathError", what, err)
		}
	}
	names, err := m.ListDir("/")
	memMust(t, err)
	if got := strings.Join(names, ","); got != "dangling,data,self" {
		t.Errorf("ListDir(/) = %s", got)
	}
	mt := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	memMust(t, m.SetModTime("/data/x", mt))
	fi, err = m.Lstat("/data/x")
	memMust(t, err)
	if !fi.ModTime().Equal(mt) {
		t.Errorf("ModTime = %v, want %v", fi.ModTime(), mt)
	}
	// Sys carries the inode number and link count.
	memMust(t, m.Link("/data/x", "/data/y"))
	fi, err = m.Lstat("/data/y")
	memMust(t, err)
	st, ok := fi.Sys().(*MemStat)
	if !ok || st.Nlink != 2 || st.Ino == 0 {
		t.Errorf("Sys() = %#v, want a *MemStat with Nlink 2", fi.Sys())
	}
	// FileInfos of another FS are never the same file.
	osfi, err := os.Lstat(".")
	memMust(t, err)
	if m.SameFile(fi, osfi) || !m.SameFile(fi, fi) || NewUnixMemFS().SameFile(fi, fi) {
		t.Error("SameFile compares across file systems")
	}
	f, err := m.OpenFile("/data/x", os.O_RDWR, 0)
	memMust(t, err)
	defer f.Close()
	if _, err := f.(io.Seeker).Seek(0, 7); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("Seek with a bad whence: got %v", err)
	}
	if _, err := f.(io.ReaderAt).ReadAt(make([]byte, 1), -1); err == nil {
		t.Error("ReadAt at a negative offset succeeded")
	}
	if _, err := f.(io.WriterAt).WriteAt([]byte("x"), -1); err == nil {
		t.Error("WriteAt at a negative offset succeeded")
	}
	if n, err := f.Read(nil); n != 0 || err != nil {
		t.Errorf("Read(nil) = %d, %v", n, err)
	}
	a, err := m.OpenFile("/data/x", os.O_WRONLY|os.O_APPEND, 0)
	memMust(t, err)
	defer a.Close()
	if _, err := a.(io.WriterAt).WriteAt([]byte("x"), 0); err == nil {
		t.Error("WriteAt on an O_APPEND file succeeded")
	}
	d, err := m.OpenFile("/data", os.O_RDONLY, 0)
	memMust(t, err)
	defer d.Close()
	if _, err := d.(io.ReaderAt).ReadAt(make([]byte, 1), 0); !errors.Is(err, syscall.EISDIR) {
		t.Errorf("ReadAt on a directory: got %v", err)
	}
	if err := d.TryLock(); err != nil {
		t.Errorf("a directory cannot be locked: %v", err)
	}
	memMust(t, d.Close())
	if err := d.TryLock(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("TryLock of a closed file: got %v", err)
	}
	if err := d.Unlock(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Unlock of a closed file: got %v", err)
	}
}

// TestMemFSLockConversion pins Linux's flock(2): a conversion from shared
// to exclusive that fails drops the shared lock.
func TestMemFSLockConversion(t *testing.T) {
	m := NewUnixMemFS()
	memMust(t, m.WriteFile("/a", nil, 0o644))
	open := func() instancelock.File {
		f, err := m.OpenFile("/a", os.O_RDONLY, 0)
		memMust(t, err)
		t.Cleanup(func() { f.Close() })
		return f
	}
	a, b, c := open(), open(), open()
	memMust(t, a.TryRLock())
	memMust(t, b.TryRLock())
	if err := a.TryLock(); err != instancelock.ErrWouldBlock {
		t.Fatalf("conversion with another reader: got %v, want ErrWouldBlock", err)
	}
	memMust(t, b.Close())
	if err := c.TryLock(); err != nil {
		t.Errorf("a kept its shared lock after the failed conversion: %v", err)
	}
}

func TestMemFSFaults(t *testing.T) {
	m := NewUnixMemFS()
	memMust(t, m.MkdirAll("/run", 0o755))
	m.Fail("open", "/run/*.tmp-*", syscall.EACCES)
	_, err := m.OpenFile("/run/app.pid.tmp-1", memCreateExcl, 0o644)
	var pe *fs.PathError
	if !errors.Is(err, fs.ErrPermission) || !errors.As(err, &pe) || pe.Op != "open" || pe.Path != "/run/app.pid.tmp-1" {
		t.Errorf("open matching the rule: got %#v", err)
	}
	if names, _ := m.ListDir("/run"); len(names) != 0 {
		t.Errorf("a failed open created %v", names)
	}
	f, err := m.OpenFile("/run/app.pid", memCreateExcl, 0o644)
	if err != nil {
		t.Fatalf("open not matching the rule: %v", err)
	}
	defer f.Close()
	m.Fail("open", "/run/*.tmp-*", nil) // heals that rule only
	m.Fail("write", "", syscall.ENOSPC)
	m.Fail("read", "/run/app.pid", syscall.EIO)
	if _, err := m.OpenFile("run/app.pid.tmp-2", memCreateExcl, 0o644); err != nil {
		t.Errorf("open after the rule was removed: %v", err)
	}
	if _, err := f.Write([]byte("x")); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("write: got %v, want ENOSPC", err)
	}
	if _, err := f.(io.WriterAt).WriteAt([]byte("x"), 0); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("WriteAt: got %v, want ENOSPC", err)
	}
	if data, _ := m.ReadFile("/run/app.pid"); len(data) != 0 {
		t.Errorf("a failed write wrote %q", data)
	}
	if _, err := f.Read(make([]byte, 1)); !errors.Is(err, syscall.EIO) {
		t.Errorf("read: got %v, want EIO", err)
	}
	if _, err := f.(io.ReaderAt).ReadAt(make([]byte, 1), 0); !errors.Is(err, syscall.EIO) {
		t.Errorf("ReadAt: got %v, want EIO", err)
	}
	m.Clear()
	if _, err := f.Write([]byte("x")); err != nil {
		t.Errorf("write after Clear: %v", err)
	}

	// Every op can fail; link and rename match either name.
	memMust(t, m.WriteFile("/src", []byte("x"), 0o644))
	for _, c := range []struct {
		op, name string
		call     func() error
	}{
		{"lstat", "/src", func() error { return memErr2(m.Lstat("/src")) }},
		{"mkdir", "/new/*", func() error { return m.MkdirAll("/new/dir", 0o755) }},
		{"link", "/src", func() error { return m.Link("/src", "/dst") }},
		{"link", "/dst", func() error { return m.Link("/src", "/dst") }},
		{"rename", "/dst", func() error { return m.Rename("/src", "/dst") }},
		{"remove", "/src", func() error { return m.Remove("/src") }},
		{"seek", "/run/app.pid", func() error { return memErr2(f.(io.Seeker).Seek(0, io.SeekStart)) }},
		{"stat", "/run/app.pid", func() error { return memErr2(f.Stat()) }},
		{"truncate", "/run/app.pid", func() error { return f.Truncate(0) }},
		{"lock", "/run/app.pid", f.TryLock},
		{"lock", "/run/app.pid", f.TryRLock},
		{"unlock", "/run/app.pid", f.Unlock},
	} {
		m.Fail(c.op, c.name, syscall.EIO)
		if err := c.call(); !errors.Is(err, syscall.EIO) {
			t.Errorf("%s on %s: got %v, want EIO", c.op, c.name, err)
		}
		m.Clear()
	}
	if _, err := m.Lstat("/dst"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a failed link or rename created /dst: %v", err)
	}

	// FailNth fails only the nth matching call.
	m.FailNth("lstat", "/src", 2, syscall.EIO)
	var got []bool
	for range 4 {
		_, err := m.Lstat("/src")
		got = append(got, err == nil)
	}
	if fmt.Sprint(got) != "[true false true true]" {
		t.Errorf("FailNth(2): calls succeeded %v", got)
	}

	// A failing close closes all the same.
	m.Fail("close", "", syscall.EIO)
	if err := f.Close(); !errors.Is(err, syscall.EIO) {
		t.Errorf("close: got %v, want EIO", err)
	}
	m.Clear()
	if err := f.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("memErr2 close: got %v, want ErrClosed", err)
	}
	if open := m.OpenFiles(); len(open) != 1 || open[0] != "run/app.pid.tmp-2" {
		t.Errorf("OpenFiles = %q, want the one file left open", open)
	}
}

func TestMemFSFaultMisuse(t *testing.T) {
	m := NewUnixMemFS()
	for what, fn := range map[string]func(){
		"unknown op":   func() { m.Fail("opne", "", syscall.EIO) },
		"bad pattern":  func() { m.Fail("open", "[", syscall.EIO) },
		"FailNth 0":    func() { m.FailNth("open", "", 0, syscall.EIO) },
		"Before nil":   func() { m.Before("open", "", nil) },
		"MemProc op":   func() { NewMemProcesses().Fail("kill", 0, syscall.EIO) },
		"Before typo":  func() { m.Before("lstats", "", func() {}) },
		"FailNth typo": func() { m.FailNth("writes", "", 1, syscall.EIO) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s did not panic", what)
				}
			}()
			fn()
		}()
	}
}

func TestMemFSBefore(t *testing.T) {
	m := NewUnixMemFS()
	memMust(t, m.WriteFile("/a", []byte("old"), 0o644))
	f, err := m.OpenFile("/a", os.O_RDONLY, 0)
	memMust(t, err)
	defer f.Close()
	// Another "process" replaces the file just before our lock call; the
	// hook's own calls do not run it again.
	calls := 0
	m.Before("lock", "/a", func() {
		calls++
		memMust(t, m.WriteFile("/b", []byte("new"), 0o644))
		memMust(t, m.Rename("/b", "/a"))
	})
	m.Before("rename", "", func() { calls += 10 })
	memMust(t, f.TryLock())
	if calls != 11 {
		t.Errorf("hooks ran %d times, want 11", calls)
	}
	st, err := f.Stat()
	memMust(t, err)
	now, err := m.Lstat("/a")
	memMust(t, err)
	if m.SameFile(st, now) {
		t.Error("the hook did not replace the file")
	}
	m.Clear()
	memMust(t, f.TryLock())
	if calls != 11 {
		t.Errorf("a hook ran after Clear")
	}
}

func TestMemFSCloseHandles(t *testing.T) {
	m := NewUnixMemFS()
	memMust(t, m.WriteFile("/a", []byte("x"), 0o644))
	memMust(t, m.Link("/a", "/b"))
	h1, err := m.OpenFile("/a", os.O_RDONLY, 0)
	memMust(t, err)
	h2, err := m.OpenFile("/b", os.O_RDONLY, 0)
	memMust(t, err)
	memMust(t, h1.TryLock())
	other, err := m.OpenFile("/b", os.O_RDONLY, 0)
	memMust(t, err)
	defer other.Close()
	if err := other.TryLock(); err != instancelock.ErrWouldBlock {
		t.Fatalf("TryLock while h1 holds it: %v", err)
	}
	memMust(t, other.Close())
	if n := m.CloseHandles("/a"); n != 2 {
		t.Errorf("CloseHandles closed %d files, want 2", n)
	}
	if n := m.CloseHandles("/missing"); n != 0 {
		t.Errorf("CloseHandles of a missing file closed %d", n)
	}
	if _, err := h2.Read(make([]byte, 1)); !errors.Is(err, os.ErrClosed) {
		t.Errorf("read on a closed handle: got %v", err)
	}
	if err := h1.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Close after CloseHandles: got %v", err)
	}
	if data, err := m.ReadFile("/a"); string(data) != "x" || err != nil {
		t.Errorf("the file did not stay: %q, %v", data, err)
	}
	f, err := m.OpenFile("/a", os.O_RDONLY, 0)
	memMust(t, err)
	if err := f.TryLock(); err != nil {
		t.Errorf("the dead holder's lock was not dropped: %v", err)
	}
	memMust(t, f.Close())
	if open := m.OpenFiles(); len(open) != 0 {
		t.Errorf("OpenFiles = %q", open)
	}
}

// TestMemFSConcurrent races exclusive creates, links and locks: exactly one
// of each wins. Run with -race.
func TestMemFSConcurrent(t *testing.T) {
	m := NewUnixMemFS()
	memMust(t, m.MkdirAll("/d", 0o755))
	const n = 16
	var wg sync.WaitGroup
	var mu sync.Mutex
	created, linked, locked := 0, 0, 0
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if f, err := m.OpenFile("/d/excl", memCreateExcl, 0o644); err == nil {
				mu.Lock()
				created++
				mu.Unlock()
				f.Close()
			}
			tmp := fmt.Sprintf("/d/tmp-%d", i)
			f, err := m.OpenFile(tmp, memCreateExcl, 0o644)
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			if err := m.Link(tmp, "/d/pid"); err == nil {
				mu.Lock()
				linked++
				mu.Unlock()
			}
			g, err := m.OpenFile("/d/pid", os.O_RDONLY, 0)
			if err != nil {
				t.Error(err)
				return
			}
			if g.TryLock() == nil {
				mu.Lock()
				locked++
				mu.Unlock()
				return // keep g open and locked until the end
			}
			g.Close()
		}()
	}
	wg.Wait()
	if created != 1 || linked != 1 || locked != 1 {
		t.Errorf("winners: created %d, linked %d, locked %d; want 1 each", created, linked, locked)
	}
}

func memMust(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func memErr2[T any](_ T, err error) error { return err }

func memOpenErr(f instancelock.File, err error) error {
	if f != nil {
		f.Close()
	}
	return err
}

const (
	memCreateExcl = os.O_RDWR | os.O_CREATE | os.O_EXCL
	memCreate     = os.O_RDWR | os.O_CREATE
)
