package pglock

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock"
	"github.com/stretchr/testify/require"
)

// proxy is a TCP relay between the Locker and the test server. frozen stops
// relaying without closing anything: a network partition. (Pooling is
// tested against a real PgBouncer: see bouncer_test.go.)
type proxy struct {
	ln     net.Listener
	frozen atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func startProxy(t testing.TB) *proxy {
	t.Helper()
	needPG(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{ln: ln}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", testAddr)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			p.wg.Add(2)
			go func() { defer p.wg.Done(); p.relay(s, c) }()
			go func() { defer p.wg.Done(); p.relay(c, s) }()
		}
	}()
	t.Cleanup(p.close)
	return p
}

// relay copies from src to dst until either closes; while frozen it holds
// what it read.
func (p *proxy) relay(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		for p.frozen.Load() {
			time.Sleep(5 * time.Millisecond)
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *proxy) dsn() string {
	return fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", p.ln.Addr())
}

func (p *proxy) close() {
	p.ln.Close()
	p.frozen.Store(false)
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// A network partition between holder and server: the holder's keep-alive
// gets no answer and reports the loss within the keep-alive interval, while
// the server still sees a live session holding the lock.
func TestPartitionIsReported(t *testing.T) {
	const keepAlive = 500 * time.Millisecond
	p := startProxy(t)
	name := lockName(t)
	l, err := New(p.dsn(), name)
	require.NoError(t, err)
	l.KeepAlive = keepAlive
	t.Cleanup(func() { l.Unlock() })
	require.NoError(t, l.TryLock())
	c := admin(t)
	backend := backendOf(t, c, name)

	p.frozen.Store(true)
	cut := time.Now()
	select {
	case <-l.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("not reported")
	}
	t.Logf("partition reported after %v (keep-alive interval %v)", time.Since(cut).Round(time.Millisecond), keepAlive)
	require.ErrorIs(t, l.Err(), instancelock.ErrLockLost)
	require.ErrorIs(t, l.Err(), ErrLeaseExpired)
	require.True(t, strings.Contains(l.Err().Error(), "did not answer") || strings.Contains(l.Err().Error(), "no keep-alive check"), l.Err().Error())
	_, ok := l.FencingToken()
	require.False(t, ok)
	// The holder gave up its connection; the server ends the session when
	// the socket closes (here the proxy closes it; across a real partition,
	// tcp_user_timeout and the keepalives do it).
	p.close()
	require.Eventually(t, func() bool { return backendOf(t, c, name) != backend }, 10*time.Second, 10*time.Millisecond)
}
