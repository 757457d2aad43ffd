// Package http provides the connector type http: an ingest source. Clients
// POST rows to it; it answers 200 only once every row of the request was
// processed (the flow ran and its writes succeeded, or the row was
// dead-lettered), 400 for a malformed body, 413 for a body over the limit,
// 503 when the rows could not be processed (retry later).
//
// The body is JSON lines, a JSON array of rows, or one JSON object.
// Config: addrs is the listen address (default 127.0.0.1:8080; the port may
// be 0), key is the path (default /ingest). Params: max_body (bytes,
// default 10 MiB), timeout (how long a request waits, default 30s).
package http

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/stream"
)

// Type is the connector type this package registers.
const Type = "http"

// Install registers the http driver.
func Install(reg *kisflow.Registry) error { return reg.RegisterDriver(Type, New) }

// Ingest is the driver.
type Ingest struct {
	addr    string
	path    string
	maxBody int64
	timeout time.Duration
	bound   atomic.Value // string: the listening address once open
}

// New builds the driver from its config.
func New(cfg *config.Conn) (kisflow.Driver, error) {
	in := &Ingest{addr: "127.0.0.1:8080", path: "/ingest", maxBody: 10 << 20}
	if a := cfg.AddrList(); len(a) > 0 {
		in.addr = a[0]
	}
	if cfg.Key != "" {
		in.path = cfg.Key
	}
	if s := cfg.Params["max_body"]; s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("http connector %q: bad max_body %q", cfg.CName, s)
		}
		in.maxBody = n
	}
	var err error
	if in.timeout, err = cfg.ParamDuration("timeout", 30*time.Second, time.Millisecond); err != nil {
		return nil, fmt.Errorf("http connector %q: %w", cfg.CName, err)
	}
	return in, nil
}

// Start does nothing: the server listens when the source opens.
func (in *Ingest) Start(context.Context) error { return nil }

// Close does nothing: closing the source stops the server.
func (in *Ingest) Close(context.Context) error { return nil }

// Addr is the address the source listens on, once open.
func (in *Ingest) Addr() string {
	s, _ := in.bound.Load().(string)
	return s
}

// OpenSource starts the HTTP server.
func (in *Ingest) OpenSource(ctx context.Context, opts stream.SourceOptions) (stream.Source, error) {
	ln, err := net.Listen("tcp", in.addr)
	if err != nil {
		return nil, fmt.Errorf("http source: %w", err)
	}
	in.bound.Store(ln.Addr().String())
	s := &source{in: in, msgs: make(chan *stream.Message, 1024), closed: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc(in.path, s.handle)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && opts.Logger != nil {
			opts.Logger.Error("http source stopped", "err", err)
		}
	}()
	return s, nil
}

type source struct {
	in        *Ingest
	srv       *http.Server
	msgs      chan *stream.Message
	closed    chan struct{}
	closeOnce sync.Once
}

// request is the Handle of every message of one HTTP request.
type request struct {
	pending atomic.Int64
	done    chan struct{}
	once    sync.Once
	err     error
}

func (r *request) finish(err error) {
	r.once.Do(func() {
		r.err = err
		close(r.done)
	})
}

func (s *source) handle(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "use POST with JSON lines, a JSON array or a JSON object", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.in.maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, fmt.Sprintf("body over %d bytes", s.in.maxBody), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	rows, err := parseBody(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if len(rows) == 0 {
		writeJSON(w, http.StatusOK, map[string]any{"accepted": 0})
		return
	}
	req := &request{done: make(chan struct{})}
	req.pending.Store(int64(len(rows)))
	ctx, cancel := context.WithTimeout(r.Context(), s.in.timeout)
	defer cancel()
	for _, row := range rows {
		m := &stream.Message{Payload: row, Handle: req, Headers: headers(r)}
		select {
		case s.msgs <- m:
		case <-ctx.Done():
			// Rows already queued are processed anyway; the client
			// retries the whole request (at-least-once).
			http.Error(w, "busy: not all rows were accepted; retry", http.StatusServiceUnavailable)
			return
		case <-s.closed:
			http.Error(w, "shutting down; retry", http.StatusServiceUnavailable)
			return
		}
	}
	select {
	case <-req.done:
		if req.err != nil {
			http.Error(w, "rows not processed: "+req.err.Error()+"; retry", http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"accepted": len(rows)})
	case <-ctx.Done():
		http.Error(w, "timed out waiting for the rows to be processed; retry", http.StatusGatewayTimeout)
	}
}

// headers keeps the request headers a flow may use (trace context, IDs).
func headers(r *http.Request) map[string]string {
	var h map[string]string
	for _, k := range []string{"Traceparent", "Tracestate", "X-Request-Id"} {
		if v := r.Header.Get(k); v != "" {
			if h == nil {
				h = map[string]string{}
			}
			h[k] = v
		}
	}
	return h
}

// parseBody splits a body into rows of JSON text: the elements of an array,
// one object, or one value per line. Every row must be valid JSON.
func parseBody(body []byte) ([]any, error) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return nil, nil
	}
	if trimmed[0] == '[' {
		var arr []json.RawMessage
		if err := json.Unmarshal(trimmed, &arr); err != nil {
			return nil, fmt.Errorf("malformed JSON array: %v", err)
		}
		rows := make([]any, len(arr))
		for i, a := range arr {
			rows[i] = []byte(a)
		}
		return rows, nil
	}
	var rows []any
	sc := bufio.NewScanner(bytes.NewReader(trimmed))
	sc.Buffer(make([]byte, 64<<10), len(trimmed)+1)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if !json.Valid(line) {
			if len(rows) == 0 && json.Valid(trimmed) {
				return []any{trimmed}, nil // one JSON value over several lines
			}
			return nil, fmt.Errorf("malformed JSON on line %d", n)
		}
		rows = append(rows, append([]byte(nil), line...))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read body: %v", err)
	}
	return rows, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Read waits for the first row, then takes what is queued, up to max.
func (s *source) Read(ctx context.Context, max int) ([]*stream.Message, error) {
	var out []*stream.Message
	select {
	case m := <-s.msgs:
		out = append(out, m)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	for len(out) < max {
		select {
		case m := <-s.msgs:
			out = append(out, m)
		default:
			return out, nil
		}
	}
	return out, nil
}

// Ack answers the requests whose rows are all done.
func (s *source) Ack(_ context.Context, msgs []*stream.Message) error {
	for _, m := range msgs {
		if req, ok := m.Handle.(*request); ok && req.pending.Add(-1) == 0 {
			req.finish(nil)
		}
	}
	return nil
}

// Nack answers the requests of rows that could not be processed with 503.
func (s *source) Nack(_ context.Context, msgs []*stream.Message, cause error) error {
	for _, m := range msgs {
		if req, ok := m.Handle.(*request); ok {
			req.finish(cause)
		}
	}
	return nil
}

// Close stops accepting requests and shuts the server down; requests still
// waiting get 503.
func (s *source) Close(ctx context.Context) error {
	s.closeOnce.Do(func() { close(s.closed) })
	for {
		select {
		case m := <-s.msgs:
			if req, ok := m.Handle.(*request); ok {
				req.finish(errors.New("shutting down"))
			}
			continue
		default:
		}
		break
	}
	return s.srv.Shutdown(ctx)
}
