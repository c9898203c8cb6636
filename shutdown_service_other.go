//go:build !windows

package instancelock

import (
	"errors"
	"fmt"
)

func (g *GracefulShutdown) runWindowsService(name string) error {
	return fmt.Errorf("instancelock: RunWindowsService(%q): %w: not Windows", name, errors.ErrUnsupported)
}
