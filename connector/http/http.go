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
//   - 503 with Retry-After: the rows could not all be processed (the source
//     is shutting down, or the flow could not finish them). When none of
//     them reached the flow the error says "nothing was processed". When
//     some did, the answer is {"error": "not all rows were processed: ...;
//     a resend may repeat the rows that were", "processed": n}: n rows were
//     processed (acknowledged) when it was written; rows of a batch cut
//     short may be in the sink too, and rows still draining may yet
//     commit, so a resend may repeat them (at-least-once, whatever the
//     stream's delivery).
//   - 504: the rows were queued but not done within timeout; they are still
//     processed, so a resend may repeat them.
//
// With delivery at-most-once the answer comes when the rows are read, before
// they are processed, and says nothing of dead letters.
//
// # Config
//
// Its params are declared in Spec (`kisflow list http`). max_in_flight_bytes
// counts the bytes of request bodies, shared by all requests, being read or
// waiting to be processed, and 256 bytes for each of their rows. A body
// within max_body whose rows take it over the whole budget is accepted
// alone: when no other request holds any of the budget, it may go over it
// by its rows' 256 bytes (at most 128 per body byte, for rows of one byte
// and a separator), and the others get 429 until it is done. What the
// source holds is thus charged at most max_in_flight_bytes, or max_body and
// 256 bytes a row of one request, whichever is larger; lower max_body to
// bound the latter.
package http

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver"
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

// Install registers the http connector type.
func Install(reg driver.Registrar) error { return reg.RegisterConnector(Spec, New) }

type params struct {
	MaxBody     driver.Size   `param:"max_body" default:"10MiB" min:"1" doc:"bytes per request, else 413; at most max_in_flight_bytes"`
	MaxInFlight driver.Size   `param:"max_in_flight_bytes" default:"64MiB" min:"1" doc:"bytes of bodies being read or processed, and 256 a row, shared by all requests, else 429 with Retry-After"`
	ReadTimeout time.Duration `param:"read_timeout" default:"30s" min:"1ms" doc:"how long a body may take to arrive, else 408 and the connection closed; the headers get read_timeout or 10s, whichever is shorter"`
	Timeout     time.Duration `param:"timeout" default:"30s" min:"1ms" doc:"how long a request waits for its rows to be processed, else 504"`
	IdleTimeout time.Duration `param:"idle_timeout" default:"60s" min:"1ms" doc:"how long a keep-alive connection may idle"`
	MaxConns    int           `param:"max_conns" default:"0" min:"0" doc:"connections served at once, the rest wait to be accepted; 0: no limit"`
}

// Spec declares the http connector's params.
var Spec = func() *driver.Spec {
	s := driver.MustSpec[params](Type, "an ingest source: clients POST JSON, JSON lines or CSV rows, answered once their rows are processed")
	s.Addrs, s.Key = "the listen address (default 127.0.0.1:8080; port 0 picks one)", "the path (default /ingest)"
	s.Unidentified = true // a resent request is new rows
	return s
}()

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
func New(cfg *config.Conn) (driver.Driver, error) {
	var p params
	if err := Spec.Decode(cfg, &p); err != nil {
		return nil, err
	}
	in := &Ingest{addr: "127.0.0.1:8080", path: "/ingest", maxBody: int64(p.MaxBody), maxInFlight: int64(p.MaxInFlight),
		readTimeout: p.ReadTimeout, timeout: p.Timeout, idleTimeout: p.IdleTimeout, maxConns: p.MaxConns}
	if a := cfg.AddrList(); len(a) > 0 {
		in.addr = a[0]
	}
	if cfg.Key != "" {
		in.path = cfg.Key
	}
	if in.maxBody > in.maxInFlight {
		return nil, fmt.Errorf("http connector %q: max_body %v is over max_in_flight_bytes %v: such a body could never be accepted", cfg.CName, p.MaxBody, p.MaxInFlight)
	}
	return in, nil
}

// Start does nothing: the server listens when the source opens.
func (in *Ingest) Start(context.Context) error { return nil }

// Close does nothing: closing the source stops the server.
func (in *Ingest) Close(context.Context) error { return nil }

// ListenAddr is the address the source's config asks it to listen on
// (see driver.Listener).
func (in *Ingest) ListenAddr() string { return in.addr }

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
		ln:     ln,
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
			w.Header().Set("Retry-After", retryAfter)
			writeJSON(w, http.StatusServiceUnavailable, req.unprocessed(errShutdown))
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

// Check verifies, for kisflow dry-run, that the source's listen address is
// free: it listens there and stops at once, serving nothing.
func (in *Ingest) Check(_ context.Context, use config.ConnUse) error {
	if !use.Source && (use.Sink || use.Load) {
		return nil
	}
	ln, err := net.Listen("tcp", in.addr)
	if err != nil {
		return stream.Fatal(fmt.Errorf("cannot listen on %s: %w", in.addr, err))
	}
	return ln.Close()
}
