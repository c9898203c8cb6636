//go:build !plan9

package instancelock_test

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/ad5dec64/instancelock"
	"github.com/ad5dec64/instancelock/instancelocktest"
	"github.com/ad5dec64/instancelock/internal/inuse"
)

// fsScriptEnv runs one scripted sequence of FS calls in a directory of OSFS or of
// a MemFS. Names in steps are relative to dir.
type fsScriptEnv struct {
	fsys      instancelock.FS
	dir       string
	symlink   func(target, name string) error
	writeFile func(name string, data []byte) error
	h         map[string]instancelock.File
}

func (e *fsScriptEnv) p(name string) string { return filepath.Join(e.dir, name) }

// fsScriptStep is one call and its outcome, as fsOutcome spells it.
type fsScriptStep struct {
	do   func(e *fsScriptEnv) (string, error)
	want string
}

func stOpen(h, name string, flag int) func(*fsScriptEnv) (string, error) {
	return func(e *fsScriptEnv) (string, error) {
		f, err := e.fsys.OpenFile(e.p(name), flag, 0o644)
		if err == nil {
			e.h[h] = f
		}
		return "", err
	}
}

func stWrite(h, s string) func(*fsScriptEnv) (string, error) {
	return func(e *fsScriptEnv) (string, error) {
		n, err := e.h[h].Write([]byte(s))
		if err == nil && n != len(s) {
			err = fmt.Errorf("short write %d", n)
		}
		return "", err
	}
}

func stRead(h string) func(*fsScriptEnv) (string, error) {
	return func(e *fsScriptEnv) (string, error) {
		buf := make([]byte, 64)
		n, err := e.h[h].Read(buf)
		return string(buf[:n]), err
	}
}

func stReadAt(h string, n int, off int64) func(*fsScriptEnv) (string, error) {
	return func(e *fsScriptEnv) (string, error) {
		buf := make([]byte, n)
		k, err := e.h[h].(io.ReaderAt).ReadAt(buf, off)
		return string(buf[:k]), err
	}
}

func stWriteAt(h, s string, off int64) func(*fsScriptEnv) (string, error) {
	return func(e *fsScriptEnv) (string, error) {
		_, err := e.h[h].(io.WriterAt).WriteAt([]byte(s), off)
		return "", err
	}
}

func stSeek(h string, off int64, whence int) func(*fsScriptEnv) (string, error) {
	return func(e *fsScriptEnv) (string, error) {
		n, err := e.h[h].(io.Seeker).Seek(off, whence)
		return fmt.Sprint(n), err
	}
}

func stTrunc(h string, size int64) func(*fsScriptEnv) (string, error) {
	return func(e *fsScriptEnv) (string, error) { return "", e.h[h].Truncate(size) }
}

func stLock(h string) func(*fsScriptEnv) (string, error) {
	return func(e *fsScriptEnv) (string, error) { return "", e.h[h].TryLock() }
}

func stRLock(h string) func(*fsScriptEnv) (string, error) {
	return func(e *fsScriptEnv) (string, error) { return "", e.h[h].TryRLock() }
}

func stUnlock(h string) func(*fsScriptEnv) (string, error) {
	return func(e *fsScriptEnv) (string, error) { return "", e.h[h].Unlock() }
}

func stClose(h string) func(*fsScriptEnv) (string, error) {
	return func(e *fsScriptEnv) (string, error) { return "", e.h[h].Close() }
}

// fstat describes the open file h: its type and size.
func stFstat(h string) func(*fsScriptEnv) (string, error) {
	return func(e *fsScriptEnv) (string, error) {
		fi, err := e.h[h].Stat()
		if err != nil {
			return "", err
		}
		return memDescribe(fi), nil
	}
}

func stLstat(name string) func(*fsScriptEnv) (string, error) {
	return func(e *fsScriptEnv) (string, error) {
		fi, err := e.fsys.Lstat(e.p(name))
		if err != nil {
			return "", err
		}
		return memDescribe(fi), nil
	}
}

func memDescribe(fi fs.FileInfo) string {
	switch t := fi.Mode().Type(); {
	case t == fs.ModeDir:
		return "dir " + fi.Name()
	case t == fs.ModeSymlink:
		return "symlink " + fi.Name()
	case t == 0:
		return fmt.Sprintf("file %s %d", fi.Name(), fi.Size())
	}
	return "other"
}

// same reports whether the open file h and the file at name are the same.
func stSame(h, name string) func(*fsScriptEnv) (string, error) {
	return func(e *fsScriptEnv) (string, error) {
		a, err := e.h[h].Stat()
		if err != nil {
			return "", err
		}
		b, err := e.fsys.Lstat(e.p(name))
		if err != nil {
			return "", err
		}
		return fmt.Sprint(e.fsys.SameFile(a, b)), nil
	}
}

func stMkdirAll(name string) func(*fsScriptEnv) (string, error) {
	return func(e *fsScriptEnv) (string, error) { return "", e.fsys.MkdirAll(e.p(name), 0o755) }
}

func stLink(oldname, newname string) func(*fsScriptEnv) (string, error) {
	return func(e *fsScriptEnv) (string, error) { return "", e.fsys.Link(e.p(oldname), e.p(newname)) }
}

func stRename(oldname, newname string) func(*fsScriptEnv) (string, error) {
	return func(e *fsScriptEnv) (string, error) { return "", e.fsys.Rename(e.p(oldname), e.p(newname)) }
}

func stRemove(name string) func(*fsScriptEnv) (string, error) {
	return func(e *fsScriptEnv) (string, error) { return "", e.fsys.Remove(e.p(name)) }
}

func stSymlink(target, name string) func(*fsScriptEnv) (string, error) {
	return func(e *fsScriptEnv) (string, error) { return "", e.symlink(target, e.p(name)) }
}

func stWriteFile(name, data string) func(*fsScriptEnv) (string, error) {
	return func(e *fsScriptEnv) (string, error) { return "", e.writeFile(e.p(name), []byte(data)) }
}

var memErrnoNames = map[syscall.Errno]string{
	syscall.ENOENT: "ENOENT", syscall.EEXIST: "EEXIST", syscall.EACCES: "EACCES", syscall.EPERM: "EPERM",
	syscall.ELOOP: "ELOOP", syscall.ENOTDIR: "ENOTDIR", syscall.EISDIR: "EISDIR", syscall.ENOTEMPTY: "ENOTEMPTY",
	syscall.EBADF: "EBADF", syscall.EINVAL: "EINVAL", syscall.EBUSY: "EBUSY", syscall.ENXIO: "ENXIO",
	syscall.ESPIPE: "ESPIPE", syscall.EIO: "EIO", syscall.ENOSPC: "ENOSPC",
}

// fsOutcome spells a call's result: "ok", "ok:<result>", or the error as
// "<op> <path relative to dir> <errno>" ("open a ENOENT").
func fsOutcome(dir, res string, err error) string {
	if err == nil {
		if res == "" {
			return "ok"
		}
		return "ok:" + res
	}
	var parts []string
	var pe *fs.PathError
	var le *os.LinkError
	switch {
	case errors.As(err, &pe) && pe.Op == "GetFileAttributesEx": // os.Lstat on Windows
		parts = append(parts, "lstat", memRelName(dir, pe.Path))
		err = pe.Err
	case errors.As(err, &pe):
		parts = append(parts, pe.Op, memRelName(dir, pe.Path))
		err = pe.Err
	case errors.As(err, &le):
		parts = append(parts, le.Op, memRelName(dir, le.New))
		err = le.Err
	}
	var errno syscall.Errno
	switch {
	case err == instancelock.ErrWouldBlock:
		parts = append(parts, "EWOULDBLOCK")
	case err == io.EOF:
		parts = append(parts, "EOF:"+res)
	case err == os.ErrClosed:
		parts = append(parts, "closed")
	case errors.Is(err, inuse.Err):
		parts = append(parts, "EINUSE")
	case errors.As(err, &errno) && memWinErrnoName(errno) != "":
		parts = append(parts, memWinErrnoName(errno))
	case errors.As(err, &errno) && memErrnoNames[errno] != "":
		parts = append(parts, memErrnoNames[errno])
	default:
		parts = append(parts, err.Error())
	}
	return strings.Join(parts, " ")
}

func memRelName(dir, name string) string {
	return strings.TrimPrefix(filepath.ToSlash(strings.TrimPrefix(name, dir)), "/")
}

const (
	memCreateExcl = os.O_RDWR | os.O_CREATE | os.O_EXCL
	memCreate     = os.O_RDWR | os.O_CREATE
)

// fsScripts are sequences of the calls a Locker makes, with the outcome the
// operating system gives. TestMemFSMatchesOS runs each against OSFS in a
// temporary directory and against a MemFS.
var fsScripts = map[string][]fsScriptStep{
	"exclusive create": {
		{stOpen("a", "a", memCreateExcl), "ok"},
		{stOpen("b", "a", memCreateExcl), "open a EEXIST"},
		{stWrite("a", "hello"), "ok"},
		{stOpen("b", "a", os.O_RDONLY), "ok"},
		{stRead("b"), "ok:hello"},
		{stRead("b"), "EOF:"},
		{stFstat("b"), "ok:file a 5"},
		{stOpen("c", "a", memCreate), "ok"},
		{stRead("c"), "ok:hello"},
		{stOpen("d", "a", os.O_WRONLY|os.O_TRUNC), "ok"},
		{stLstat("a"), "ok:file a 0"},
		{stOpen("e", "a", os.O_WRONLY|os.O_APPEND), "ok"},
		{stWrite("e", "xy"), "ok"},
		{stWrite("e", "z"), "ok"},
		{stReadAt("b", 8, 0), "EOF:xyz"},
	},
	"missing files and parents": {
		{stOpen("a", "a", os.O_RDONLY), "open a ENOENT"},
		{stOpen("a", "no/a", memCreateExcl), "open no/a ENOENT"},
		{stLstat("a"), "lstat a ENOENT"},
		{stRemove("a"), "remove a ENOENT"},
		{stLink("a", "b"), "link b ENOENT"},
		{stRename("a", "b"), "rename b ENOENT"},
		{stRemove("no/a"), "remove no/a ENOENT"},
		{stRename("no/a", "b"), "rename b ENOENT"},
		{stWriteFile("f", "x"), "ok"},
		{stRename("f", "no/b"), "rename no/b ENOENT"},
		{stLink("f", "no/b"), "link no/b ENOENT"},
		{stLstat("f/x"), "lstat f/x ENOTDIR"},
		{stOpen("a", "f/x", memCreateExcl), "open f/x ENOTDIR"},
		{stMkdirAll("f"), "mkdir f ENOTDIR"},
		{stMkdirAll("f/g/h"), "mkdir f ENOTDIR"},
		{stMkdirAll("d/e"), "ok"},
		{stMkdirAll("d/e"), "ok"},
		{stLstat("d/e"), "ok:dir e"},
	},
	"access modes": {
		{stWriteFile("a", "data"), "ok"},
		{stOpen("r", "a", os.O_RDONLY), "ok"},
		{stWrite("r", "x"), "write a EBADF"},
		{stTrunc("r", 0), "truncate a EINVAL"},
		{stWriteAt("r", "x", 0), "write a EBADF"},
		{stOpen("w", "a", os.O_WRONLY), "ok"},
		{stRead("w"), "read a EBADF"},
		{stReadAt("w", 1, 0), "read a EBADF"},
		{stOpen("rw", "a", os.O_RDWR), "ok"},
		{stTrunc("rw", -1), "truncate a EINVAL"},
		{stTrunc("rw", 2), "ok"},
		{stRead("rw"), "ok:da"},
		{stTrunc("rw", 4), "ok"},
		{stReadAt("rw", 4, 0), "ok:da\x00\x00"},
		{stWriteAt("rw", "ta", 2), "ok"},
		{stReadAt("r", 8, 0), "EOF:data"},
		{stReadAt("r", 2, 3), "EOF:a"},
		{stReadAt("r", 2, 9), "EOF:"},
		{stSeek("r", 0, io.SeekEnd), "ok:4"},
		{stSeek("r", -1, io.SeekStart), "seek a EINVAL"},
		{stSeek("r", 1, io.SeekStart), "ok:1"},
		{stSeek("r", 1, io.SeekCurrent), "ok:2"},
		{stRead("r"), "ok:ta"},
		{stWriteAt("rw", "!", 6), "ok"},
		{stReadAt("r", 8, 0), "EOF:data\x00\x00!"},
		{stClose("r"), "ok"},
		{stClose("r"), "close a closed"},
		{stRead("r"), "read a closed"},
		{stWrite("r", "x"), "write a closed"},
		{stFstat("r"), "stat a closed"},
		{stTrunc("r", 0), "truncate a closed"},
		{stSeek("r", 0, io.SeekStart), "seek a closed"},
	},
	"symbolic links": {
		{stSymlink("target", "l"), "ok"},
		{stLstat("l"), "ok:symlink l"},
		{stOpen("a", "l", os.O_RDONLY), "open l ELOOP"},
		{stOpen("a", "l", memCreate), "open l ELOOP"},
		{stOpen("a", "l", memCreateExcl), "open l EEXIST"},
		{stLink("l", "l2"), "ok"},
		{stLstat("l2"), "ok:symlink l2"},
		{stRemove("l"), "ok"},
		{stLstat("l"), "lstat l ENOENT"},
		{stMkdirAll("d"), "ok"},
		{stSymlink("d", "ld"), "ok"},
		{stOpen("a", "ld/f", memCreateExcl), "ok"},
		{stLstat("d/f"), "ok:file f 0"},
		{stMkdirAll("ld/e"), "ok"},
		{stLstat("d/e"), "ok:dir e"},
		{stMkdirAll("ld"), "ok"},
		{stSymlink("../d/f", "d/e/up"), "ok"},
		{stOpen("b", "d/e/up", os.O_RDONLY), "open d/e/up ELOOP"},
		{stSymlink("loop2", "loop1"), "ok"},
		{stSymlink("loop1", "loop2"), "ok"},
		{stLstat("loop1/x"), "lstat loop1/x ELOOP"},
		{stRename("ld", "ld2"), "ok"},
		{stLstat("ld2"), "ok:symlink ld2"},
	},
	"directories": {
		{stMkdirAll("d/e"), "ok"},
		{stOpen("d", "d", os.O_RDONLY), "ok"},
		{stRead("d"), "read d EISDIR"},
		{stFstat("d"), "ok:dir d"},
		{stOpen("x", "d", os.O_RDWR), "open d EISDIR"},
		{stOpen("x", "d", os.O_WRONLY), "open d EISDIR"},
		{stOpen("x", "d", memCreateExcl), "open d EEXIST"},
		{stRemove("d"), "remove d ENOTEMPTY"},
		{stWriteFile("a", "x"), "ok"},
		{stRename("a", "d"), "rename d EEXIST"},
		{stRename("d", "a"), "rename a ENOTDIR"},
		{stRename("d", "d/e/x"), "rename d/e/x EINVAL"},
		{stMkdirAll("f/g"), "ok"},
		{stRename("f/g", "d/e"), "rename d/e EEXIST"},
		{stRename("d/e", "f/h"), "ok"},
		{stLstat("f/h"), "ok:dir h"},
		{stLstat("d/e"), "lstat d/e ENOENT"},
		{stLink("d", "d2"), "link d2 EPERM"},
		{stRemove("d"), "ok"},
		{stFstat("d"), "ok:dir d"},
	},
	"hard links": {
		{stWriteFile("a", "one"), "ok"},
		{stLink("a", "b"), "ok"},
		{stLink("a", "b"), "link b EEXIST"},
		{stOpen("a", "a", os.O_RDWR), "ok"},
		{stSame("a", "b"), "ok:true"},
		{stWriteAt("a", "two", 0), "ok"},
		{stOpen("b", "b", os.O_RDONLY), "ok"},
		{stRead("b"), "ok:two"},
		{stLock("a"), "ok"},
		{stLock("b"), "EWOULDBLOCK"},
		{stRemove("a"), "ok"},
		{stSame("a", "b"), "ok:true"},
		{stRename("b", "b"), "ok"},
		{stClose("a"), "ok"},
		{stLock("b"), "ok"},
	},
	"rename replaces": {
		{stWriteFile("a", "new"), "ok"},
		{stWriteFile("b", "old"), "ok"},
		{stOpen("old", "b", os.O_RDONLY), "ok"},
		{stOpen("new", "a", os.O_RDONLY), "ok"},
		{stRename("a", "b"), "ok"},
		{stLstat("a"), "lstat a ENOENT"},
		{stSame("new", "b"), "ok:true"},
		{stSame("old", "b"), "ok:false"},
		{stRead("old"), "ok:old"},
		{stFstat("old"), "ok:file b 3"},
		{stOpen("b", "b", os.O_RDONLY), "ok"},
		{stRead("b"), "ok:new"},
		{stLink("b", "c"), "ok"},
		{stRename("b", "c"), "ok"},
		{stLstat("b"), "ok:file b 3"},
	},
	"remove while open": {
		{stOpen("a", "a", memCreateExcl), "ok"},
		{stLock("a"), "ok"},
		{stRemove("a"), "ok"},
		{stLstat("a"), "lstat a ENOENT"},
		{stWrite("a", "still"), "ok"},
		{stReadAt("a", 5, 0), "ok:still"},
		{stFstat("a"), "ok:file a 5"},
		{stOpen("b", "a", memCreateExcl), "ok"},
		{stLock("b"), "ok"},
		{stSame("a", "a"), "ok:false"},
		{stRemove("a"), "ok"},
		{stRemove("a"), "remove a ENOENT"},
	},
	"locks per open file": {
		{stOpen("a", "a", memCreateExcl), "ok"},
		{stOpen("b", "a", os.O_RDONLY), "ok"},
		{stOpen("c", "a", os.O_RDONLY), "ok"},
		{stLock("a"), "ok"},
		{stLock("a"), "ok"},
		{stLock("b"), "EWOULDBLOCK"},
		{stRLock("b"), "EWOULDBLOCK"},
		{stUnlock("a"), "ok"},
		{stUnlock("a"), "ok"},
		{stRLock("b"), "ok"},
		{stRLock("c"), "ok"},
		{stLock("a"), "EWOULDBLOCK"},
		{stClose("b"), "ok"},
		{stLock("a"), "EWOULDBLOCK"},
		{stClose("c"), "ok"},
		{stLock("a"), "ok"},
		{stRLock("a"), "ok"},
		{stOpen("d", "a", os.O_RDONLY), "ok"},
		{stRLock("d"), "ok"},
		{stLock("d"), "EWOULDBLOCK"},
	},
}

// fsScriptsWindows are sequences whose outcome is Windows': a file that is
// open cannot be removed or renamed, nor replaced by a rename. They run
// against OSFS on Windows and against a MemFS with Windows' rules on every
// system.
var fsScriptsWindows = map[string][]fsScriptStep{
	"held files stay": {
		{stOpen("a", "a", memCreateExcl), "ok"},
		{stLock("a"), "ok"},
		{stRemove("a"), "remove a EINUSE"},
		{stWriteFile("b", "other"), "ok"},
		{stRename("b", "a"), "rename a EACCES"},
		{stRename("a", "c"), "rename c EINUSE"},
		{stOpen("r", "a", os.O_RDONLY), "ok"},
		{stLock("r"), "EWOULDBLOCK"},
		{stClose("a"), "ok"},
		{stRemove("a"), "remove a EINUSE"},
		{stLock("r"), "ok"},
		{stClose("r"), "ok"},
		{stRemove("a"), "ok"},
		{stLstat("a"), "lstat a ENOENT"},
		{stRename("b", "a"), "ok"},
		{stLstat("b"), "lstat b ENOENT"},
	},
	"closed files go": {
		{stWriteFile("a", "new"), "ok"},
		{stWriteFile("b", "old"), "ok"},
		{stRename("a", "b"), "ok"},
		{stOpen("b", "b", os.O_RDONLY), "ok"},
		{stRead("b"), "ok:new"},
		{stOpen("x", "b", memCreateExcl), "open b EEXIST"},
		{stClose("b"), "ok"},
		{stRemove("b"), "ok"},
		{stRemove("b"), "remove b ENOENT"},
	},
}

func TestMemFSMatchesOS(t *testing.T) {
	for name, steps := range fsScriptsWindows {
		t.Run("windows "+name, func(t *testing.T) {
			var osEnv *fsScriptEnv
			if runtime.GOOS == "windows" {
				osEnv = &fsScriptEnv{fsys: instancelock.OSFS, dir: t.TempDir(), symlink: os.Symlink, h: map[string]instancelock.File{},
					writeFile: func(name string, data []byte) error { return os.WriteFile(name, data, 0o644) }}
				t.Cleanup(func() {
					for _, f := range osEnv.h {
						f.Close()
					}
				})
			}
			m := instancelocktest.NewWindowsMemFS()
			memDir := filepath.FromSlash("/tmp/memfs-test")
			memMust(t, m.MkdirAll(memDir, 0o755))
			memEnv := &fsScriptEnv{fsys: m, dir: memDir, symlink: m.Symlink, h: map[string]instancelock.File{},
				writeFile: func(name string, data []byte) error { return m.WriteFile(name, data, 0o644) }}
			for i, s := range steps {
				if osEnv != nil {
					res, err := s.do(osEnv)
					if got := fsOutcome(osEnv.dir, res, err); got != s.want {
						t.Errorf("step %d on OSFS: got %q, want %q", i, got, s.want)
					}
				}
				res, err := s.do(memEnv)
				if got := fsOutcome(memDir, res, err); got != s.want {
					t.Errorf("step %d on MemFS: got %q, want %q", i, got, s.want)
				}
			}
		})
	}
	for name, steps := range fsScripts {
		t.Run(name, func(t *testing.T) {
			osDir := t.TempDir()
			osEnv := &fsScriptEnv{fsys: instancelock.OSFS, dir: osDir, symlink: os.Symlink, h: map[string]instancelock.File{},
				writeFile: func(name string, data []byte) error { return os.WriteFile(name, data, 0o644) }}
			m := instancelocktest.NewUnixMemFS()
			memDir := filepath.FromSlash("/tmp/memfs-test")
			if err := m.MkdirAll(memDir, 0o755); err != nil {
				t.Fatal(err)
			}
			memEnv := &fsScriptEnv{fsys: m, dir: memDir, symlink: m.Symlink, h: map[string]instancelock.File{},
				writeFile: func(name string, data []byte) error { return m.WriteFile(name, data, 0o644) }}
			t.Cleanup(func() {
				for _, f := range osEnv.h {
					f.Close()
				}
			})
			// The expected outcomes are Unix's: on Windows only a MemFS
			// with Unix's rules is held to them.
			checkOS := runtime.GOOS != "windows"
			for i, s := range steps {
				if checkOS {
					res, err := s.do(osEnv)
					if got := fsOutcome(osDir, res, err); got != s.want {
						t.Errorf("step %d on OSFS: got %q, want %q", i, got, s.want)
					}
				}
				res, err := s.do(memEnv)
				if got := fsOutcome(memDir, res, err); got != s.want {
					t.Errorf("step %d on MemFS: got %q, want %q", i, got, s.want)
				}
			}
		})
	}
}

func memMust(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
