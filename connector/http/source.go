package http

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/kisflow-go/kisflow/stream"
)

// source serves requests and hands their rows to the runtime, a request at
// a time: a request's rows are all queued, or none.
type source struct {
	in      *Ingest
	srv     *http.Server
	budget  *budget
	queue   chan *request
	closing context.Context // done once Close begins
	stop    context.CancelFunc

	mu  sync.Mutex // guards cur and at, which Read and Close use
	cur *request   // the request Read is taking rows from
	at  int        // its next row
}

// request is one HTTP request's rows and how they fared.
type request struct {
	msgs     []stream.Message
	refs     []rowRef
	pending  atomic.Int64 // rows not yet acknowledged or returned
	budget   *budget
	reserved int64 // bytes taken from the budget, given back when no row is pending
	done     chan struct{}
	once     sync.Once

	mu   sync.Mutex // guards err and dead
	err  error      // why rows could not be processed
	dead []deadRow
}

// rowRef is the Handle of a message: its request and its place in it.
type rowRef struct {
	req   *request
	index int
}

// deadRow is a row of a request that went to the dead-letter sink.
type deadRow struct {
	Row   int    `json:"row"`
	Func  string `json:"func,omitempty"`
	Error string `json:"error"`
}

// result is the body of a 200 or 422 answer.
type result struct {
	Accepted     int       `json:"accepted"`
	DeadLettered int       `json:"dead_lettered,omitempty"`
	Errors       []deadRow `json:"errors,omitempty"`
}

// start makes the request's messages, one per row.
func (r *request) start(rows [][]byte, headers map[string]string) {
	r.msgs = make([]stream.Message, len(rows))
	r.refs = make([]rowRef, len(rows))
	for i, row := range rows {
		r.refs[i] = rowRef{req: r, index: i}
		r.msgs[i] = stream.Message{Payload: row, Handle: &r.refs[i], Headers: headers}
	}
	r.pending.Store(int64(len(rows)))
}

// settle counts n rows as done; the last one answers the request and gives
// its bytes back to the budget.
func (r *request) settle(n int) {
	if r.pending.Add(-int64(n)) == 0 {
		r.releaseBudget()
		r.once.Do(func() { close(r.done) })
	}
}

func (r *request) fail(err error) {
	r.mu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.mu.Unlock()
}

// abandon gives back a request that was never queued.
func (r *request) abandon() { r.releaseBudget() }

func (r *request) releaseBudget() {
	if n := r.reserved; n > 0 {
		r.reserved = 0
		r.budget.release(n)
	}
}

// outcome is the answer of a request whose rows are all done.
func (r *request) outcome() (int, any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return http.StatusServiceUnavailable, map[string]string{"error": "rows not processed: " + r.err.Error() + "; retry"}
	}
	res := result{Accepted: len(r.msgs) - len(r.dead), DeadLettered: len(r.dead), Errors: r.dead}
	if len(r.dead) > 0 {
		return http.StatusUnprocessableEntity, res
	}
	return http.StatusOK, res
}

// Read waits for a request, then takes its rows and those of the requests
// queued behind it, up to max.
func (s *source) Read(ctx context.Context, max int) ([]*stream.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		s.mu.Unlock() // Close must not wait for a request to come
		select {
		case req := <-s.queue:
			s.mu.Lock()
			s.cur, s.at = req, 0
		case <-ctx.Done():
			s.mu.Lock()
			return nil, ctx.Err()
		}
	}
	out := make([]*stream.Message, 0, min(max, len(s.cur.msgs)-s.at))
	for len(out) < max {
		if s.cur == nil {
			select {
			case s.cur = <-s.queue:
				s.at = 0
			default:
				return out, nil
			}
		}
		for s.at < len(s.cur.msgs) && len(out) < max {
			out = append(out, &s.cur.msgs[s.at])
			s.at++
		}
		if s.at == len(s.cur.msgs) {
			s.cur = nil
		}
	}
	return out, nil
}

// Ack counts the rows as processed and answers the requests whose rows are
// all done.
func (s *source) Ack(_ context.Context, msgs []*stream.Message) error {
	for _, m := range msgs {
		if ref, ok := m.Handle.(*rowRef); ok {
			ref.req.settle(1)
		}
	}
	return nil
}

// Nack marks the requests of rows that could not be processed; they are
// answered 503 once their other rows are done.
func (s *source) Nack(_ context.Context, msgs []*stream.Message, cause error) error {
	for _, m := range msgs {
		if ref, ok := m.Handle.(*rowRef); ok {
			ref.req.fail(cause)
			ref.req.settle(1)
		}
	}
	return nil
}

// DeadLettered records which rows of their requests went to the
// dead-letter sink, for the answer.
func (s *source) DeadLettered(_ context.Context, msgs []*stream.Message, letters []*stream.DeadLetter) {
	for i, m := range msgs {
		ref, ok := m.Handle.(*rowRef)
		if !ok || i >= len(letters) {
			continue
		}
		ref.req.mu.Lock()
		ref.req.dead = append(ref.req.dead, deadRow{Row: ref.index, Func: letters[i].Func, Error: letters[i].Error})
		ref.req.mu.Unlock()
	}
}

// errShutdown is the cause of requests answered because the source closed.
var errShutdown = errors.New("shutting down")

// Close stops accepting requests and shuts the server down: bodies being
// read are cut short, requests queued or waiting get 503.
func (s *source) Close(ctx context.Context) error {
	s.stop()
	s.mu.Lock()
	if s.cur != nil {
		s.cur.fail(errShutdown)
		s.cur.settle(len(s.cur.msgs) - s.at)
		s.cur = nil
	}
	s.mu.Unlock()
	for {
		select {
		case req := <-s.queue:
			req.fail(errShutdown)
			req.settle(len(req.msgs))
			continue
		default:
		}
		break
	}
	if err := s.srv.Shutdown(ctx); err != nil {
		// Handlers that outlive ctx: cut their connections.
		_ = s.srv.Close()
	}
	return nil
}
