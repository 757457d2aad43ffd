package http

import (
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/kisflow-go/kisflow/stream"
)

// source serves requests and hands their rows to the runtime, a request at
// a time: a request's rows are all queued, or none.
type source struct {
	in      *Ingest
	srv     *http.Server
	ln      net.Listener
	budget  *budget
	queue   chan *request
	closing context.Context // done once Close begins
	stop    context.CancelFunc

	mu  sync.Mutex // guards cur, at, ci and ri, which Read and Close use
	cur *request   // the request Read is taking rows from
	ci  int        // the chunk of cur it takes from next
	ri  int        // the row of that chunk
	at  int        // rows of cur taken so far
}

// request is one HTTP request's rows and how they fared.
type request struct {
	chunks  [][]row      // the rows, in chunks that never move once filled
	n       int          // rows
	pending atomic.Int64 // rows not yet acknowledged or returned
	taken   atomic.Int64 // rows Read handed to the runtime
	acked   atomic.Int64 // rows acknowledged: processed (or dead-lettered)
	charge  charge       // its share of the budget
	holders atomic.Int32 // the handler and the queued rows: the last to let go gives the charge back
	done    chan struct{}
	once    sync.Once

	mu   sync.Mutex // guards err and dead
	err  error      // why rows could not be processed
	dead []deadRow
}

// row is one message of a request; the message's Handle points back to it.
type row struct {
	msg   stream.Message
	req   *request
	index int
}

// maxChunk bounds the rows of a chunk.
const maxChunk = 1024

// add appends a row (JSON text) as a message.
func (r *request) add(payload []byte, headers map[string]string) {
	last := len(r.chunks) - 1
	if last < 0 || len(r.chunks[last]) == cap(r.chunks[last]) {
		size := 8
		if last >= 0 {
			size = min(2*cap(r.chunks[last]), maxChunk)
		}
		r.chunks = append(r.chunks, make([]row, 0, size))
		last++
	}
	r.chunks[last] = append(r.chunks[last], row{req: r, index: r.n})
	rw := &r.chunks[last][len(r.chunks[last])-1]
	rw.msg = stream.Message{Payload: payload, Handle: rw, Headers: headers}
	r.n++
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

// settle counts n rows as done; the last one answers the request.
func (r *request) settle(n int) {
	if r.pending.Add(-int64(n)) == 0 {
		r.once.Do(func() { close(r.done) })
		r.letGo()
	}
}

// letGo gives the request's bytes back to the budget once neither its
// handler nor its rows hold them.
func (r *request) letGo() {
	if r.holders.Add(-1) == 0 {
		r.charge.release()
	}
}

func (r *request) fail(err error) {
	r.mu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.mu.Unlock()
}

// outcome is the answer of a request whose rows are all done.
func (r *request) outcome() (int, any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return http.StatusServiceUnavailable, r.unprocessed(r.err)
	}
	// A row that made several rows may have more than one dead letter: it
	// is named once, with the first.
	dead := slices.CompactFunc(slices.SortedStableFunc(slices.Values(r.dead), func(a, b deadRow) int { return a.Row - b.Row }),
		func(a, b deadRow) bool { return a.Row == b.Row })
	res := result{Accepted: r.n - len(dead), DeadLettered: len(dead), Errors: dead}
	if len(dead) > 0 {
		return http.StatusUnprocessableEntity, res
	}
	return http.StatusOK, res
}

// unprocessed is the body of a 503 answer for a request whose rows were
// not all processed because of err. Only when the runtime never took any
// of its rows can it say that nothing was processed; otherwise it says how
// many rows are known processed (acknowledged), which others may have
// been too (a batch cut short in the sink), and that a resend may repeat
// them.
func (r *request) unprocessed(err error) any {
	if r.taken.Load() == 0 {
		return map[string]string{"error": "rows not processed: " + err.Error() + "; nothing was processed; retry"}
	}
	return struct {
		Error     string `json:"error"`
		Processed int64  `json:"processed"`
	}{"not all rows were processed: " + err.Error() + "; a resend may repeat the rows that were", r.acked.Load()}
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
			s.cur, s.at, s.ci, s.ri = req, 0, 0, 0
		case <-ctx.Done():
			s.mu.Lock()
			return nil, ctx.Err()
		}
	}
	out := make([]*stream.Message, 0, min(max, s.cur.n-s.at))
	taken := 0 // of out, counted in s.at
	for len(out) < max {
		if s.cur == nil {
			select {
			case s.cur = <-s.queue:
				s.at, s.ci, s.ri = 0, 0, 0
			default:
				return out, nil
			}
		}
		for s.ci < len(s.cur.chunks) && len(out) < max {
			c := s.cur.chunks[s.ci]
			for ; s.ri < len(c) && len(out) < max; s.ri++ {
				out = append(out, &c[s.ri].msg)
			}
			if s.ri == len(c) {
				s.ci, s.ri = s.ci+1, 0
			}
		}
		s.at += len(out) - taken
		s.cur.taken.Add(int64(len(out) - taken))
		taken = len(out)
		if s.at == s.cur.n {
			s.cur = nil
		}
	}
	return out, nil
}

// rowOf returns the row behind a message of this source, or nil.
func rowOf(m *stream.Message) *row {
	rw, _ := m.Handle.(*row)
	return rw
}

// Ack counts the rows as processed and answers the requests whose rows are
// all done.
func (s *source) Ack(_ context.Context, msgs []*stream.Message) error {
	for _, m := range msgs {
		if rw := rowOf(m); rw != nil {
			rw.req.acked.Add(1)
			rw.req.settle(1)
		}
	}
	return nil
}

// Nack marks the requests of rows that could not be processed; they are
// answered 503 once their other rows are done.
func (s *source) Nack(_ context.Context, msgs []*stream.Message, cause error) error {
	for _, m := range msgs {
		if rw := rowOf(m); rw != nil {
			rw.req.fail(cause)
			rw.req.settle(1)
		}
	}
	return nil
}

// DeadLettered records which rows of their requests went to the
// dead-letter sink, for the answer.
func (s *source) DeadLettered(_ context.Context, msgs []*stream.Message, letters []*stream.DeadLetter) {
	for i, m := range msgs {
		rw := rowOf(m)
		if rw == nil || i >= len(letters) {
			continue
		}
		rw.req.mu.Lock()
		rw.req.dead = append(rw.req.dead, deadRow{Row: rw.index, Func: letters[i].Func, Error: letters[i].Error})
		rw.req.mu.Unlock()
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
		s.cur.settle(s.cur.n - s.at)
		s.cur = nil
	}
	s.mu.Unlock()
	for {
		select {
		case req := <-s.queue:
			req.fail(errShutdown)
			req.settle(req.n)
			continue
		default:
		}
		break
	}
	if err := s.srv.Shutdown(ctx); err != nil {
		// Handlers that outlive ctx: cut their connections.
		_ = s.srv.Close()
	}
	// Closed here too: Shutdown closes only the listeners Serve already
	// tracks, and a Close right after OpenSource can come before Serve
	// began, which would then close it later, on its own goroutine.
	_ = s.ln.Close()
	return nil
}
