package bench

import (
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// newSyscallsHandle is the implSyscalls row: the system calls of
// instancelock's acquire + release cycle on Linux, made directly, with
// none of the library's logic around them. It is not a lock (it checks
// nothing and never refuses); it shows what the design itself costs next
// to the floor:
//
//   - the lock's name: socket, bind, listen (close at release);
//   - stat of the directory (the library's check that its cached real
//     path still holds);
//   - the PID file made unnamed, locked, written and given its name:
//     open(O_TMPFILE), fstat, flock, write, linkat;
//   - at release: lstat (the file is still ours), unlink, close.
func newSyscallsHandle(path string) (*handle, error) {
	dir := filepath.Dir(path)
	name := "@instancelock-bench/" + strconv.Itoa(os.Getpid())
	content := make([]byte, 310) // the size of a PID file the library writes
	var sock, fd int
	var st unix.Stat_t
	return &handle{
		try: func() (bool, error) {
			var err error
			if sock, err = unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0); err != nil {
				return false, err
			}
			if err := unix.Bind(sock, &unix.SockaddrUnix{Name: name}); err != nil {
				return false, err
			}
			if err := unix.Listen(sock, 4096); err != nil {
				return false, err
			}
			if err := unix.Stat(dir, &st); err != nil {
				return false, err
			}
			if fd, err = unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o644); err != nil {
				return false, &os.PathError{Op: "open", Path: dir, Err: err}
			}
			if err := unix.Fstat(fd, &st); err != nil {
				return false, err
			}
			if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
				return false, err
			}
			if _, err := unix.Write(fd, content); err != nil {
				return false, err
			}
			err = unix.Linkat(fd, "", unix.AT_FDCWD, path, unix.AT_EMPTY_PATH)
			if err == unix.ENOENT || err == unix.EPERM {
				err = unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), unix.AT_FDCWD, path, unix.AT_SYMLINK_FOLLOW)
			}
			return err == nil, err
		},
		release: func() error {
			unix.Close(sock)
			if err := unix.Lstat(path, &st); err != nil {
				return err
			}
			if err := unix.Unlink(path); err != nil {
				return err
			}
			return unix.Close(fd)
		},
	}, nil
}
