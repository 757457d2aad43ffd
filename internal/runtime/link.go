package runtime

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kisflow-go/kisflow/stream"
)

// link is the state of the runner's connection to its source or its sink:
// up, or down since a failure. It logs once per change of state, not once
// per attempt, and counts the failed attempts. Safe for concurrent use.
type link struct {
	side, name string // "source" or "sink", and the connector's name
	log        *slog.Logger

	isDown atomic.Bool
	errs   atomic.Int64

	mu     sync.Mutex
	since  time.Time
	last   error
	logged time.Time // when still last logged
}

func newLink(side, name string, log *slog.Logger) *link {
	if name == "" {
		name = side
	}
	return &link{side: side, name: name, log: log}
}

// fail records a failed attempt; the first after a success is logged.
func (l *link) fail(err error) {
	l.errs.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last = err
	if l.isDown.Load() {
		return
	}
	l.since = time.Now()
	l.isDown.Store(true)
	l.log.Warn(fmt.Sprintf("%s unavailable: %v; retrying with backoff", l.label(), err))
}

// still logs, at most once per every while the link is down, that it is
// still down and since when.
func (l *link) still(every time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.isDown.Load() {
		return
	}
	now := time.Now()
	if l.logged.IsZero() || l.logged.Before(l.since) {
		l.logged = l.since
	}
	if now.Sub(l.logged) < every {
		return
	}
	l.logged = now
	l.log.Warn(fmt.Sprintf("%s still unavailable after %s: %v; retrying with backoff", l.label(), now.Sub(l.since).Round(time.Second), l.last))
}

// ok records a success; the first after a failure is logged.
func (l *link) ok() {
	if !l.isDown.Load() {
		return // the hot path: one atomic load
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.isDown.Load() {
		return
	}
	l.isDown.Store(false)
	l.log.Warn(fmt.Sprintf("%s back after %s", l.label(), time.Since(l.since).Round(100*time.Millisecond)))
}

// down returns the error that took the link down, or nil while it is up.
func (l *link) down() error {
	if !l.isDown.Load() {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.isDown.Load() {
		return nil
	}
	return fmt.Errorf("%s unavailable for %s: %w", l.label(), time.Since(l.since).Round(time.Second), l.last)
}

// label names the link in logs and errors: its side and its connector's
// name ("sink orders"), or the side alone when it has no name of its own.
func (l *link) label() string {
	if l.name == l.side {
		return l.side
	}
	return l.side + " " + l.name
}

// streak counts the messages of consecutive epochs in which nothing
// succeeded and every message was dead-lettered: a flow that fails every
// row (a typo in an expression, input of the wrong format), whatever mix of
// errors the rows meet (a typo among malformed lines fails them in two
// ways). An epoch with output, or with fewer dead letters than messages,
// ends the streak. Rows rejected by design (marked stream.ErrExpected: a
// window's late rows) are no failures: they end the streak as output does. Only the commit loop uses it.
type streak struct {
	fn, err string
	n       int
}

// observe extends the streak by a committed epoch and returns an error
// when it reached limit (limit < 0: never).
func (s *streak) observe(ep *epoch, limit int) error {
	if len(ep.todo) == 0 {
		return nil // only redeliveries of committed messages
	}
	failed := 0
	for _, exp := range ep.expected {
		if !exp {
			failed++
		}
	}
	if ep.out.Load() > 0 || failed < len(ep.todo) {
		s.n = 0
		return nil
	}
	for i, d := range ep.dead {
		if ep.expected[i] {
			continue
		}
		dl := d.(*stream.DeadLetter)
		s.fn, s.err = dl.Func, dl.Error
		s.n++
	}
	if limit > 0 && s.n >= limit {
		return fmt.Errorf("%d messages in a row failed and none succeeded, the last in function %q: %s (stream.max_consecutive_failures)", s.n, s.fn, s.err)
	}
	return nil
}
