//go:build windows

package proctest

import (
	"unsafe"

	"golang.org/x/sys/windows"
)

// WineVersion returns the version of Wine this Windows program runs under
// (ntdll's wine_get_version), or "" on Windows itself.
func WineVersion() string {
	p := windows.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version")
	if p.Find() != nil {
		return ""
	}
	r, _, _ := p.Call()
	if r == 0 {
		return "unknown"
	}
	return windows.BytePtrToString(*(**byte)(unsafe.Pointer(&r))) // a static C string of ntdll
}
