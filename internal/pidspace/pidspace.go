// Package pidspace reads the identity of a space of process ids that
// instancelock records in a PID file (ProcessLock.PIDSpace): one boot of
// one machine and, on Linux, one PID namespace, written
// "<os>:<boot>:<namespace>:<machine>". The Locker decides by it whether a
// PID file's pid can be checked from here (ProcessLock.Local); the
// instancelock command also whether the kernel here is the one the file's
// holder ran on.
package pidspace

import "strings"

// Space is a parsed PIDSpace. Parts a platform cannot tell are empty.
type Space struct {
	OS      string // "linux", "darwin", "bsd", "windows"
	Boot    string // the boot's identity (Linux: the boot id); empty where the platform has none
	NS      string // the PID namespace (Linux: the inode of /proc/self/ns/pid)
	Machine string // the machine's identity (Linux: /etc/machine-id), empty when unknown
}

// Parse splits s. ok is false when s is not "<os>:<boot>:<namespace>:<machine>"
// (an empty PIDSpace: a file written before it existed).
func Parse(s string) (sp Space, ok bool) {
	f := strings.SplitN(s, ":", 4)
	if len(f) != 4 {
		return Space{}, false
	}
	return Space{OS: f[0], Boot: f[1], NS: f[2], Machine: f[3]}, true
}

// FromStartToken returns the Space a Linux start token
// ("linux:<boot id>:<start time in ticks>") names: its OS and boot only.
// ok is false for any other token.
func FromStartToken(token string) (sp Space, ok bool) {
	f := strings.Split(token, ":")
	if len(f) != 3 || f[0] != "linux" || f[1] == "" {
		return Space{}, false
	}
	return Space{OS: f[0], Boot: f[1]}, true
}

// SameBoot reports whether a and b are one boot of one kernel: the same
// system and the same, known, boot. Processes of one boot share the
// kernel's locks, whatever their PID namespaces.
func (a Space) SameBoot(b Space) bool {
	return a.OS == b.OS && a.Boot != "" && a.Boot == b.Boot
}

// EarlierBoot reports whether a and b are two boots of one machine: the
// same system and the same, known, machine, booted differently. A process
// of a's boot is gone in b's.
func (a Space) EarlierBoot(b Space) bool {
	return a.OS == b.OS && a.Machine != "" && a.Machine == b.Machine && a.Boot != b.Boot
}
