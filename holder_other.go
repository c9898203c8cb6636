//go:build !linux

package instancelock

import (
	"errors"
	"io/fs"
	"os"
)

// hasLockName: no abstract socket namespace here; the PID file's kernel
// lock is the only kernel object (see the README's platform table).
const hasLockName = false

func lockName(string) string { return "" }

func (l *Locker) realName() (string, string) { return "", "" }

var (
	errNameTaken  = errors.New("the lock's name is taken")
	errNoListener = errors.New("nothing listens on the lock's name")
)

func bindName(string) (int, error) { return -1, errors.ErrUnsupported }

func closeName(int) {}

type peer struct{ pid, uid int }

func peerOfName(string) (peer, error) { return peer{}, errors.ErrUnsupported }

func (l *Locker) trustedPeer(peer) bool { return false }

// flockOwners: no kernel table of lock owners here.
func flockOwners(fs.FileInfo) ([]int, []int, error) { return nil, nil, errors.ErrUnsupported }

func (l *Locker) nameSquatter() (string, bool) { return "", false }

func netPeerOf(int) (int, bool) { return 0, false }

func (l *Locker) namesFree() bool { return false }

func signalPinned(pid int, sig os.Signal, check func() error) error {
	if err := check(); err != nil {
		return err
	}
	return processSignal(pid, sig)
}

func watchHeld(*tenure, string, string, func()) error { return errors.ErrUnsupported }

func rewatchHeld(*tenure, string, string, func()) {}

func unwatchHeld(*tenure) {}

func rewatchSock(*tenure, int, int) {}

// holdsFlock: no kernel table of lock owners here.
func (l *Locker) holdsFlock(int) bool { return false }
