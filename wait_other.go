//go:build !linux

package instancelock

import (
	"context"
	"errors"
	"time"
)

// waiter: without inotify and pidfd, Lock polls with a backoff.
type waiter struct{}

func newWaiter(dir, base string) (*waiter, error) { return nil, errors.ErrUnsupported }

func (*waiter) close() {}

func (*waiter) wait(context.Context, int, time.Duration) {}
