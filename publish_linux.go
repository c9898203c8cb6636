package instancelock

import (
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// createHeld is TryLock's short way on Linux, for a Locker on the
// operating system's file system that holds all its names: when there is
// no file at the path, the new PID file is made as an unnamed file in the
// directory (O_TMPFILE), locked and written, and then given its name with
// linkat(2), which fails when a file is already there. The file appears
// complete and locked, as with attemptRename's temporary file, but with
// no temporary name to create and remove, and none left behind by a crash
// (an unnamed file vanishes with its last descriptor).
//
// It returns the file, locked, and its FileInfo; or nil when the short way
// does not apply and publish must run: a file is at the path, the
// directory is missing, the file system (or a missing /proc) does not
// support it, or the write failed (a full disk, say). The short way writes
// before it can know whether a file is at the path, so it never reports a
// failure itself: publish judges any file at the path first (a live
// holder, someone's file) and reports what it finds, or the failure of its
// own write.
func (l *Locker) createHeld(data []byte) (File, fs.FileInfo) {
	fd, err := unix.Open(filepath.Dir(l.path), unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, nil
	}
	f := osFile{os.NewFile(uintptr(fd), l.path)}
	fi, err := f.Stat()
	if err == nil {
		err = f.TryLock() // nothing else can reach an unnamed file: never refused
	}
	if err != nil {
		f.Close()
		return nil, nil
	}
	if fi.Mode().Perm() != 0o644 {
		// The umask removed bits: give the documented mode.
		if err := f.Chmod(0o644); err != nil {
			l.log.Debug("cannot set the mode of the new file", "err", err)
		}
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		l.log.Debug("the short way could not write the new file; taking the general one", "err", err)
		return nil, nil
	}
	if err := linkTmpfile(fd, l.path); err != nil {
		f.Close()
		return nil, nil
	}
	return f, fi
}

// linkTmpfile gives the unnamed file fd the name path: linkat(2) with
// AT_EMPTY_PATH (which needs CAP_DAC_READ_SEARCH where the kernel does not
// relax it for the file's opener), else through /proc/self/fd, the way
// open(2) documents for O_TMPFILE.
func linkTmpfile(fd int, path string) error {
	err := unix.Linkat(fd, "", unix.AT_FDCWD, path, unix.AT_EMPTY_PATH)
	if err == unix.ENOENT || err == unix.EPERM {
		err = unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), unix.AT_FDCWD, path, unix.AT_SYMLINK_FOLLOW)
	}
	return err
}
