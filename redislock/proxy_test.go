//go:build unix

package redislock

import (
	"bytes"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// proxy is a TCP proxy on 127.0.0.1 in front of the test server, that can
// drop the reply to one command (then close the connection, as a network
// failure would) or swallow all traffic in both directions (a partition).
type proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	drop  string // lower-case command whose next reply is dropped
	ndrop int
	hole  bool
	conns []net.Conn
	wg    sync.WaitGroup
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Add(2)
		var muted atomic.Bool
		go p.up(c, s, &muted)
		go p.down(s, c, &muted)
	}
}

// up forwards the client's requests.
func (p *proxy) up(c, s net.Conn, muted *atomic.Bool) {
	defer p.wg.Done()
	defer s.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		hole := p.hole
		drop := p.drop != "" && bytes.Contains(bytes.ToLower(buf[:n]), []byte(p.drop))
		if drop {
			p.drop = ""
			p.ndrop++
		}
		p.mu.Unlock()
		if hole {
			continue
		}
		if drop {
			muted.Store(true)
		}
		if _, err := s.Write(buf[:n]); err != nil {
			return
		}
		if drop {
			// Let the server run the command, then fail the connection
			// before the reply reaches the client.
			time.Sleep(100 * time.Millisecond)
			c.Close()
			return
		}
	}
}

// down forwards the server's replies.
func (p *proxy) down(s, c net.Conn, muted *atomic.Bool) {
	defer p.wg.Done()
	defer c.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := s.Read(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		hole := p.hole
		p.mu.Unlock()
		if hole || muted.Load() {
			continue
		}
		if _, err := c.Write(buf[:n]); err != nil {
			return
		}
	}
}

// dropNextReply drops the reply to the next request that contains the
// command cmd.
func (p *proxy) dropNextReply(cmd string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.drop = strings.ToLower(cmd)
}

func (p *proxy) dropped() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ndrop
}

// blackhole swallows all traffic while on.
func (p *proxy) blackhole(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hole = on
}

func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
