package http

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// budget is the byte budget every request of one source shares: bytes of
// request bodies read and not yet processed. Safe for concurrent use.
type budget struct {
	max  int64
	used atomic.Int64
}

// acquire takes n bytes if they fit, and reports whether they did.
func (b *budget) acquire(n int64) bool {
	for {
		u := b.used.Load()
		if u+n > b.max {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

func (b *budget) release(n int64) { b.used.Add(-n) }

// errBusy is returned by a metered body when the budget has no room left.
var errBusy = errors.New("in-flight byte budget exhausted")

// meteredBody takes every byte it reads from the budget, beyond what was
// reserved up front (the Content-Length).
type meteredBody struct {
	r        io.Reader
	b        *budget
	reserved int64 // bytes taken from the budget
	read     int64
}

func (m *meteredBody) Read(p []byte) (int, error) {
	n, err := m.r.Read(p)
	m.read += int64(n)
	if over := m.read - m.reserved; over > 0 {
		// Take a little ahead, so a chunked body does not touch the
		// shared counter on every read.
		ahead := max(over, 32<<10)
		if !m.b.acquire(ahead) {
			if !m.b.acquire(over) {
				return 0, errBusy
			}
			ahead = over
		}
		m.reserved += ahead
	}
	return n, err
}

// limitListener accepts at most cap(sem) connections at a time; the rest
// wait in the kernel's backlog.
type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func newLimitListener(l net.Listener, n int) *limitListener {
	return &limitListener{Listener: l, sem: make(chan struct{}, n), done: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
