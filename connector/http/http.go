// Package http provides the connector type http: an ingest source. Clients
// POST rows to it, and each request is answered only once every one of its
// rows was processed (the flow ran and its writes succeeded, or the row was
// dead-lettered).
//
// # Body
//
// The Content-Type says how the body is split into rows:
//   - application/json (and any application/*+json), or no Content-Type:
//     JSON values separated by whitespace; a top-level array stands for its
//     elements, any other value (an object) is one row. JSON lines therefore
//     read as JSON too.
//   - application/x-ndjson, application/ndjson, application/jsonl,
//     application/x-jsonlines: one JSON value per line (an array on a line is
//     one row); blank lines are skipped.
//   - text/csv: a header line, then one row per record, a JSON object of
//     header to value with numbers as numbers.
//
// Bodies are parsed as streams; a request's rows are queued only once the
// whole body parsed, so a malformed body processes none of its rows.
//
// # Answers
//
//   - 200 {"accepted": n}: every row was processed.
//   - 422 {"accepted": a, "dead_lettered": d, "errors": [{"row", "func",
//     "error"}]}: the request was processed, but the rows listed (by their
//     0-based position in the request, once each) went to the dead-letter
//     sink: a function of the flow rejected them, or the sink refused one
//     of the rows made of them (func "sink <name>"); the other a rows were
//     processed. Resend only the listed rows, once fixed.
//   - 400 {"error", "line" or "offset"}: the body is malformed; nothing of
//     it was processed.
//   - 408: the body did not arrive within read_timeout; the connection is
//     closed. Headers that do not arrive within read_timeout or 10s,
//     whichever is shorter, are answered by Go's server, not by the source:
//     it closes the connection, with a plain-text 400 Bad Request if the
//     headers stopped mid-line and without an answer if between lines.
//   - 413: the body is over max_body.
//   - 415: the Content-Type is none of the above.
//   - 429 with Retry-After: the bodies being read or processed already fill
//     max_in_flight_bytes; nothing of this request was processed. A body
//     within max_body is refused only while others are in flight, never for
//     ever (see max_in_flight_bytes).
//   - 503 with Retry-After: the rows could not be processed (the source is
//     shutting down, or the flow could not finish them); some may have been
//     processed, so a resend may repeat them (at-least-once).
//   - 504: the rows were queued but not done within timeout; they are still
//     processed, so a resend may repeat them.
//
// With delivery at-most-once the answer comes when the rows are read, before
// they are processed, and says nothing of dead letters.
//
// # Config
//
// addrs is the listen address (default 127.0.0.1:8080; the port may be 0),
// key is the path (default /ingest). Params:
//   - max_body: bytes per request (default 10 MiB; at most
//     max_in_flight_bytes).
//   - max_in_flight_bytes: bytes of request bodies, shared by all requests,
//     being read or waiting to be processed, and 256 bytes for each of
//     their rows (default 64 MiB). A body within max_body whose rows take it
//     over the whole budget is accepted alone: when no other request holds
//     any of the budget, it may go over it by its rows' 256 bytes (at most
//     128 per body byte, for rows of one byte and a separator), and the
//     others get 429 until it is done. What the source holds is thus
//     charged at most max_in_flight_bytes, or max_body and 256 bytes a row
//     of one request, whichever is larger; lower max_body to bound the
//     latter.
//   - read_timeout: how long a request's body may take to arrive (default
//     30s); a client sending slower is cut off. The headers get
//     read_timeout or 10s, whichever is shorter.
//   - timeout: how long a request waits for its rows to be processed
//     (default 30s).
//   - idle_timeout: how long a keep-alive connection may idle (default 60s).
//   - max_conns: connections served at once; the rest wait to be accepted
//     (default 0, no limit).
package http

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/stream"
)

// Type is the connector type this package registers.
const Type = "http"

// Defaults of the params.
const (
	DefaultMaxBody          = 10 << 20
	DefaultMaxInFlightBytes = 64 << 20
	DefaultReadTimeout      = 30 * time.Second
	DefaultTimeout          = 30 * time.Second
	DefaultIdleTimeout      = 60 * time.Second
)

const (
	maxHeaderBytes       = 64 << 10
	maxReadHeaderTimeout = 10 * time.Second // or read_timeout, if shorter
	retryAfter           = "1"              // seconds, in 429 and 503 answers
	queuedRequests       = 1024             // requests parsed and waiting for Read
	// The response must be written within the body's time, the wait for
	// the rows and this.
	writeTimeoutBeyondWaiting = 10 * time.Second
)

// params lists the params New knows; any other is an error.
var params = []string{"max_body", "max_in_flight_bytes", "read_timeout", "timeout", "idle_timeout", "max_conns"}

// Install registers the http driver.
func Install(reg *kisflow.Registry) error { return reg.RegisterDriver(Type, New) }

// Ingest is the driver.
type Ingest struct {
	addr        string
	path        string
	maxBody     int64
	maxInFlight int64
	readTimeout time.Duration
	timeout     time.Duration
	idleTimeout time.Duration
	maxConns    int
	bound       atomic.Value // string: the listening address once open
}

// New builds the driver from its config.
func New(cfg *config.Conn) (kisflow.Driver, error) {
	bad := func(err error) error { return fmt.Errorf("http connector %q: %w", cfg.CName, err) }
	for k := range cfg.Params {
		if !slices.Contains(params, k) {
			return nil, bad(fmt.Errorf("unknown param %q (known: %s)", k, strings.Join(params, ", ")))
		}
	}
	in := &Ingest{addr: "127.0.0.1:8080", path: "/ingest"}
	if a := cfg.AddrList(); len(a) > 0 {
		in.addr = a[0]
	}
	if cfg.Key != "" {
		in.path = cfg.Key
	}
	var err error
	if in.maxBody, err = paramBytes(cfg, "max_body", DefaultMaxBody); err != nil {
		return nil, bad(err)
	}
	if in.maxInFlight, err = paramBytes(cfg, "max_in_flight_bytes", DefaultMaxInFlightBytes); err != nil {
		return nil, bad(err)
	}
	if in.maxBody > in.maxInFlight {
		return nil, bad(fmt.Errorf("max_body %d is over max_in_flight_bytes %d: such a body could never be accepted", in.maxBody, in.maxInFlight))
	}
	if in.readTimeout, err = cfg.ParamDuration("read_timeout", DefaultReadTimeout, time.Millisecond); err != nil {
		return nil, bad(err)
	}
	if in.timeout, err = cfg.ParamDuration("timeout", DefaultTimeout, time.Millisecond); err != nil {
		return nil, bad(err)
	}
	if in.idleTimeout, err = cfg.ParamDuration("idle_timeout", DefaultIdleTimeout, time.Millisecond); err != nil {
		return nil, bad(err)
	}
	if in.maxConns, err = cfg.ParamInt("max_conns", 0, 0); err != nil {
		return nil, bad(err)
	}
	return in, nil
}

func paramBytes(cfg *config.Conn, name string, def int64) (int64, error) {
	s := cfg.Params[name]
	if s == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad %s %q (want a number of bytes above 0)", name, s)
	}
	return n, nil
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
	if opts.Logger != nil {
		opts.Logger.Info("http source listening", "addr", ln.Addr().String(), "path", in.path)
	}
	if in.maxConns > 0 {
		ln = newLimitListener(ln, in.maxConns)
	}
	s := &source{
		in:     in,
		budget: &budget{max: in.maxInFlight},
		queue:  make(chan *request, queuedRequests),
	}
	s.closing, s.stop = context.WithCancel(context.WithoutCancel(ctx))
	mux := http.NewServeMux()
	mux.HandleFunc(in.path, s.handle)
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: min(in.readTimeout, maxReadHeaderTimeout),
		// The body's deadline is set per request by the handler, and
		// lifted once the body is read, while the request waits.
		WriteTimeout:   in.readTimeout + in.timeout + writeTimeoutBeyondWaiting,
		IdleTimeout:    in.idleTimeout,
		MaxHeaderBytes: maxHeaderBytes,
	}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && opts.Logger != nil {
			opts.Logger.Error("http source stopped", "err", err)
		}
	}()
	return s, nil
}

func (s *source) handle(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		answerError(w, http.StatusMethodNotAllowed, "use POST with JSON, JSON lines or CSV")
		return
	}
	f, err := formatOf(r.Header.Get("Content-Type"))
	if err != nil {
		w.Header().Set("Accept-Post", supportedTypes)
		answerError(w, http.StatusUnsupportedMediaType, err.Error()+"; use "+supportedTypes)
		return
	}
	if s.closing.Err() != nil {
		answerBusy(w, http.StatusServiceUnavailable, "shutting down; retry")
		return
	}
	if r.ContentLength > s.in.maxBody {
		answerError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", s.in.maxBody))
		return
	}
	req := &request{charge: charge{b: s.budget}, done: make(chan struct{})}
	req.holders.Store(1)
	defer req.letGo() // the bytes stay counted while the handler holds them
	if r.ContentLength > 0 {
		if !s.budget.acquire(r.ContentLength) {
			answerBusy(w, http.StatusTooManyRequests, "busy: the server holds max_in_flight_bytes of bodies already; retry")
			return
		}
		req.charge.reserved = r.ContentLength
	}
	if err := s.readRows(w, r, req, f); err != nil {
		s.answerReadError(w, err)
		return
	}
	if req.n == 0 {
		writeJSON(w, http.StatusOK, result{})
		return
	}
	req.pending.Store(int64(req.n))
	req.holders.Add(1) // the rows, until they are all done

	ctx, cancel := context.WithTimeout(r.Context(), s.in.timeout)
	defer cancel()
	select {
	case s.queue <- req:
	case <-ctx.Done():
		req.letGo() // the rows were not queued
		answerBusy(w, http.StatusServiceUnavailable, "busy: the rows were not queued in time; nothing was processed; retry")
		return
	case <-s.closing.Done():
		req.letGo() // the rows were not queued
		answerBusy(w, http.StatusServiceUnavailable, "shutting down; nothing was processed; retry")
		return
	}
	select {
	case <-req.done:
	case <-ctx.Done():
		if r.Context().Err() == nil {
			answerError(w, http.StatusGatewayTimeout, "timed out waiting for the rows to be processed; they may still be; retry")
		}
		return
	case <-s.closing.Done():
		select {
		case <-req.done:
		default:
			answerBusy(w, http.StatusServiceUnavailable, "shutting down before the rows were processed; retry")
			return
		}
	}
	code, res := req.outcome()
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", retryAfter)
	}
	writeJSON(w, code, res)
}

// readRows reads and parses the body into req within read_timeout,
// charging its bytes and rows to the budget.
func (s *source) readRows(w http.ResponseWriter, r *http.Request, req *request, f format) error {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(s.in.readTimeout))
	// A shutdown cuts a body short rather than wait for it.
	stop := context.AfterFunc(s.closing, func() { _ = rc.SetReadDeadline(time.Now()) })
	defer stop()
	body := &meteredBody{r: http.MaxBytesReader(w, r.Body, s.in.maxBody), c: &req.charge}
	h := headers(r)
	err := parse(body, f, r.ContentLength, func(row []byte) error {
		req.add(row, h)
		req.charge.rows++
		return req.charge.cover()
	})
	if err != nil {
		return err
	}
	// The body is read: lift the deadline, or the server's wait for the
	// next request would cancel this one when it passes.
	_ = rc.SetReadDeadline(time.Time{})
	return nil
}

func (s *source) answerReadError(w http.ResponseWriter, err error) {
	var syn *syntaxError
	var tooBig *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.As(err, &syn):
		res := map[string]any{"error": syn.msg}
		if syn.line > 0 {
			res["line"] = syn.line
		}
		if syn.offset >= 0 {
			res["offset"] = syn.offset
		}
		writeJSON(w, http.StatusBadRequest, res)
	case errors.As(err, &tooBig):
		answerError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", s.in.maxBody))
	case errors.Is(err, errBusy):
		answerBusy(w, http.StatusTooManyRequests, "busy: the server holds max_in_flight_bytes of bodies already; nothing was processed; retry")
	case s.closing.Err() != nil:
		answerBusy(w, http.StatusServiceUnavailable, "shutting down; nothing was processed; retry")
	case errors.As(err, &ne) && ne.Timeout():
		w.Header().Set("Connection", "close")
		answerError(w, http.StatusRequestTimeout, fmt.Sprintf("body not received within read_timeout %v", s.in.readTimeout))
	default:
		answerError(w, http.StatusBadRequest, err.Error())
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

func answerError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func answerBusy(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Retry-After", retryAfter)
	answerError(w, code, msg)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
