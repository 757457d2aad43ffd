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

// acquireAlone takes n bytes beyond the budget if the holder of held bytes
// is the only one holding any, and reports whether it did. A request whose
// body and rows need more than the whole budget is then served alone, and
// the others are refused until it is done.
func (b *budget) acquireAlone(held, n int64) bool {
	return b.used.CompareAndSwap(held, held+n)
}

func (b *budget) release(n int64) { b.used.Add(-n) }

// errBusy is returned when the budget has no room left for a request.
var errBusy = errors.New("in-flight byte budget exhausted")

// rowOverhead is what a row costs in memory beside its bytes: its message
// (a chunk may stand half empty), boxed payload and place in the runtime's
// batches.
const rowOverhead = 256

// charge is one request's share of the budget: the bytes of its body read
// so far plus rowOverhead per row, taken ahead in steps. Used by one
// goroutine at a time.
type charge struct {
	b        *budget
	reserved int64 // bytes taken from the budget
	read     int64 // body bytes read
	rows     int64
}

// cover takes from the budget what the request holds beyond its
// reservation, or returns errBusy. A request that holds everything in
// flight may grow beyond the budget: its body fits (max_body is at most the
// budget), and only its rows' overhead overruns, so a body within max_body
// is never refused for ever.
func (c *charge) cover() error {
	over := c.read + c.rows*rowOverhead - c.reserved
	if over <= 0 {
		return nil
	}
	// A little ahead, so a body does not touch the shared counter on
	// every read.
	ahead := max(over, 32<<10)
	if !c.b.acquire(ahead) {
		ahead = over
		if !c.b.acquire(over) && !c.b.acquireAlone(c.reserved, over) {
			return errBusy
		}
	}
	c.reserved += ahead
	return nil
}

// release gives the reservation back.
func (c *charge) release() {
	if c.reserved > 0 {
		c.b.release(c.reserved)
		c.reserved = 0
	}
}

// meteredBody charges every byte it reads.
type meteredBody struct {
	r io.Reader
	c *charge
}

func (m *meteredBody) Read(p []byte) (int, error) {
	n, err := m.r.Read(p)
	m.c.read += int64(n)
	if cerr := m.c.cover(); cerr != nil {
		return 0, cerr
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
