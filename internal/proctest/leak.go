package proctest

import (
	"bytes"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// Goroutines returns the stack of every goroutine but the caller's, keyed
// by its "goroutine N" header.
func Goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i == 0 {
			continue // the calling goroutine
		}
		id, _, _ := strings.Cut(g, " [")
		out[id] = g
	}
	return out
}

// CheckGoroutines fails the test if, when it ends (after the cleanups
// registered later), a goroutine for which suspect(stack) is true still
// runs after a grace period of 3 s for goroutines on their way out.
// Goroutines listed in before (a Goroutines snapshot; nil for none) are not
// counted. Tests that use it must not run in parallel with others.
func CheckGoroutines(t *testing.T, before map[string]string, suspect func(stack string) bool) {
	t.Helper()
	t.Cleanup(func() {
		var leaked []string
		for deadline := time.Now().Add(3 * time.Second); ; {
			leaked = leaked[:0]
			for id, stack := range Goroutines() {
				if _, old := before[id]; !old && suspect(stack) {
					leaked = append(leaked, stack)
				}
			}
			if len(leaked) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if len(leaked) > 0 {
			sort.Strings(leaked)
			t.Errorf("%d goroutine(s) leaked:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
		}
	})
}

// SyncBuffer is a bytes.Buffer safe for concurrent use, for the output of
// a logger that writes from other goroutines while the test reads.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what was written.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Reset empties the buffer.
func (b *SyncBuffer) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.b.Reset()
}
