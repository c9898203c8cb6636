//go:build windows

package instancelock

import (
	"sync"

	"golang.org/x/sys/windows/registry"
)

// thisPIDSpace is "windows:::<MachineGuid>" from
// HKLM\SOFTWARE\Microsoft\Cryptography, set when Windows is installed. It
// does not change at boot (the start token tells runs apart), and cloned
// images that were not generalised share it. Empty when it cannot be read.
var thisPIDSpace = sync.OnceValue(func() string {
	k, err := registry.OpenKey(registry.LOCAL_MACHINE, `SOFTWARE\Microsoft\Cryptography`, registry.QUERY_VALUE|registry.WOW64_64KEY)
	if err != nil {
		return ""
	}
	defer k.Close()
	id, _, err := k.GetStringValue("MachineGuid")
	if err != nil {
		return ""
	}
	return "windows:::" + id
})
