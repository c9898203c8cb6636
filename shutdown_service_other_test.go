//go:build !windows

package instancelock

import (
	"errors"
	"testing"
)

func TestRunWindowsServiceUnsupported(t *testing.T) {
	err := NewGracefulShutdown(nil).RunWindowsService("backend")
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("RunWindowsService elsewhere than on Windows: %v, want ErrUnsupported", err)
	}
}
