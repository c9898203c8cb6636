package pglock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ad5dec64/instancelock"
	"github.com/stretchr/testify/require"
)

// pooler is a small in-test stand-in for a transaction-mode pooler such as
// PgBouncer with pool_mode=transaction, speaking the PostgreSQL wire
// protocol between pgx and the test server. For every client it opens two
// server sessions and forwards each transaction (the client's messages up
// to a Sync or a simple Query) to one of them; when alternate is on and
// the session is idle afterwards (ReadyForQuery 'I'), the next transaction
// goes to the other session, as a pooler hands an idle server connection to
// whoever asks next. With alternate off it is a plain proxy. frozen stops
// forwarding without closing anything: a network partition.
type pooler struct {
	t         testing.TB
	ln        net.Listener
	target    string
	alternate atomic.Bool
	frozen    atomic.Bool

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startPooler(t testing.TB, alternate bool) *pooler {
	t.Helper()
	needPG(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &pooler{t: t, ln: ln, target: testAddr}
	p.alternate.Store(alternate)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.track(c)
			p.wg.Add(1)
			go func() { defer p.wg.Done(); p.serve(c) }()
		}
	}()
	t.Cleanup(p.close)
	return p
}

// dsn is the connection string through the pooler.
func (p *pooler) dsn() string {
	return fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", p.ln.Addr())
}

func (p *pooler) track(c net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

func (p *pooler) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *pooler) serve(client net.Conn) {
	defer client.Close()
	var startup []byte
	for {
		msg, err := readStartup(client)
		if err != nil {
			return
		}
		switch binary.BigEndian.Uint32(msg[4:8]) {
		case 80877103, 80877104: // SSLRequest, GSSENCRequest: refused
			if _, err := client.Write([]byte{'N'}); err != nil {
				return
			}
			continue
		case 80877102: // CancelRequest
			return
		}
		startup = msg
		break
	}
	var servers [2]net.Conn
	for i := range servers {
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			return
		}
		p.track(s)
		defer s.Close()
		if _, err := s.Write(startup); err != nil {
			return
		}
		servers[i] = s
	}
	// The client sees the first session's greeting; the second one's is
	// dropped.
	if _, err := relayUntilReady(servers[0], client); err != nil {
		return
	}
	if _, err := relayUntilReady(servers[1], io.Discard); err != nil {
		return
	}

	txs := make(chan []byte)
	gone := make(chan struct{}) // the client left
	quit := make(chan struct{}) // serve returned
	defer close(quit)
	go func() {
		defer close(gone)
		var tx []byte
		for {
			typ, msg, err := readMessage(client)
			if err != nil || typ == 'X' {
				return
			}
			tx = append(tx, msg...)
			if typ == 'S' || typ == 'Q' {
				select {
				case txs <- tx:
				case <-quit:
					return
				}
				tx = nil
			}
		}
	}()
	cur := 0
	for {
		var tx []byte
		select {
		case tx = <-txs:
		case <-gone:
			return
		}
		for p.frozen.Load() {
			select {
			case <-gone:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
		if _, err := servers[cur].Write(tx); err != nil {
			return
		}
		status, err := relayUntilReady(servers[cur], client)
		if err != nil {
			return
		}
		if status == 'I' && p.alternate.Load() {
			cur = 1 - cur
		}
	}
}

// readStartup reads a message without a type byte (the startup phase).
func readStartup(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n < 8 || n > 1<<16 {
		return nil, fmt.Errorf("startup message of %d bytes", n)
	}
	msg := make([]byte, n)
	copy(msg, hdr[:])
	_, err := io.ReadFull(r, msg[4:])
	return msg, err
}

// readMessage reads a typed message and returns its type and its bytes.
func readMessage(r io.Reader) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n < 4 || n > 1<<24 {
		return 0, nil, fmt.Errorf("message of %d bytes", n)
	}
	msg := make([]byte, 1+n)
	copy(msg, hdr[:])
	_, err := io.ReadFull(r, msg[5:])
	return hdr[0], msg, err
}

// relayUntilReady copies a server's messages to w up to and including
// ReadyForQuery, and returns its transaction status.
func relayUntilReady(s net.Conn, w io.Writer) (byte, error) {
	for {
		typ, msg, err := readMessage(s)
		if err != nil {
			return 0, err
		}
		if _, err := w.Write(msg); err != nil {
			return 0, err
		}
		switch typ {
		case 'Z':
			return msg[5], nil
		case 'R':
			if binary.BigEndian.Uint32(msg[5:9]) != 0 {
				return 0, errors.New("the test pooler only knows trust authentication")
			}
		}
	}
}

// The pooler stand-in works as a plain proxy: the lock works through it.
func TestThroughSessionProxy(t *testing.T) {
	p := startPooler(t, false)
	name := lockName(t)
	l, err := New(p.dsn(), name)
	require.NoError(t, err)
	require.NoError(t, l.TryLock())
	h, err := newLocker(t, name).Holder()
	require.NoError(t, err)
	require.Equal(t, l.InstanceID(), h.InstanceID)
	require.NoError(t, l.Unlock())
}

// Behind a transaction-mode pooler the lock taken by one statement is not
// visible to the next: TryLock fails with ErrTransactionPooler, says what
// to do, and leaves the lock free.
func TestTransactionPoolerIsRefused(t *testing.T) {
	p := startPooler(t, true)
	name := lockName(t)
	l, err := New(p.dsn(), name)
	require.NoError(t, err)
	for _, acquire := range []func() error{l.TryLock, func() error { return l.Lock(t.Context()) }} {
		err = acquire()
		require.ErrorIs(t, err, ErrTransactionPooler)
		require.NotErrorIs(t, err, instancelock.ErrAlreadyRunning)
		require.Contains(t, err.Error(), "pool_mode=transaction")
		require.ErrorIs(t, l.Err(), instancelock.ErrNotHeld)
		require.Nil(t, l.Lost())

		direct := newLocker(t, name)
		require.Eventually(t, func() bool {
			_, err := direct.Holder()
			return errors.Is(err, instancelock.ErrNotRunning)
		}, 10*time.Second, 10*time.Millisecond, "the lock taken behind the pooler was left held")
		require.NoError(t, direct.TryLock())
		require.NoError(t, direct.Unlock())
	}
}

// A session that starts moving between server sessions after the lock was
// taken is a loss, reported by the keep-alive.
func TestMovedSessionIsLost(t *testing.T) {
	p := startPooler(t, false)
	l, err := New(p.dsn(), lockName(t), WithKeepAlive(200*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(func() { l.Unlock() })
	require.NoError(t, l.TryLock())
	p.alternate.Store(true)
	select {
	case <-l.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("not reported")
	}
	require.ErrorIs(t, l.Err(), instancelock.ErrLockLost)
	require.ErrorIs(t, l.Err(), ErrTransactionPooler)
}

// A network partition between holder and server: the holder's keep-alive
// gets no answer and reports the loss within the keep-alive interval, while
// the server still sees a live session holding the lock.
func TestPartitionIsReported(t *testing.T) {
	const keepAlive = 500 * time.Millisecond
	p := startPooler(t, false)
	name := lockName(t)
	l, err := New(p.dsn(), name, WithKeepAlive(keepAlive))
	require.NoError(t, err)
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
	require.True(t, strings.Contains(l.Err().Error(), "did not answer"), l.Err().Error())
	_, ok := l.FencingToken()
	require.False(t, ok)
	// The holder gave up its connection; the server ends the session when
	// the socket closes (here the proxy closes it; across a real partition,
	// tcp_user_timeout and the keepalives do it).
	require.Eventually(t, func() bool { return backendOf(t, c, name) != backend }, 10*time.Second, 10*time.Millisecond)
}
