package remote

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/stream"
)

// Invoker runs one function over a batch: *kisflow.Engine (Engine.Invoke).
// The rows of the Outcome it returns are Serve's from then on: they are
// sent as they are, after Invoke returns.
type Invoker interface {
	Invoke(ctx context.Context, fname string, params map[string]string, rows []any) (*driver.Outcome, error)
}

// ServeOptions configure Serve: the flags of `kisflow serve`, and the
// serve block of the global file, under the same names.
type ServeOptions struct {
	Service  string // the service's name in the registry (required with a registry)
	Registry string // nats://host[:port] (port 4222 when not given; NATSURL); "" or "none": no registration (static or DNS callers)
	Listen   string // the gRPC listen address; port 0: any free port, registered as bound
	Version  string
	Group    string
	Weight   int           // default DefaultWeight
	Bucket   string        // the NATS key-value bucket; default DefaultBucket
	TTL      time.Duration // a registration's life without a heartbeat; default DefaultTTL
	Funcs    []string      // the functions served
	// Drain bounds how long in-flight calls may take to finish once ctx is
	// cancelled (default 10s).
	Drain time.Duration
	// MaxMessage is the largest message a call may send or take, in
	// bytes (default DefaultMaxMessage): a reply that would be larger is
	// refused as such, and the caller splits its batch.
	MaxMessage int
	Logger     *slog.Logger
	// Ready, when set, is called once the listener is bound and the
	// provider registered, with the registration; or, when the registry
	// could not be reached, once the first attempt to register failed (it
	// is logged, and made again with backoff while the provider serves).
	Ready func(p Provider)
}

func (o ServeOptions) registers() bool { return o.Registry != "" && o.Registry != "none" }

// Validate returns an error, naming the flag, for settings Serve cannot
// use: a service name a registry key cannot hold, a registry that is not
// a NATS URL (NATSURL) or none, a negative weight or TTL. Zero values take
// their defaults.
func (o ServeOptions) Validate() error {
	if o.registers() {
		if err := CheckService(o.Service); err != nil {
			return fmt.Errorf("--service: %w", err)
		}
		if _, err := NATSURL(o.Registry); err != nil {
			return fmt.Errorf("--registry %q: %w (or none, for callers with a static or DNS registry)", o.Registry, err)
		}
	}
	if o.Weight < 0 {
		return fmt.Errorf("--weight %d: a weight is a whole number of at least 1", o.Weight)
	}
	if o.TTL < 0 {
		return fmt.Errorf("--ttl %s: a TTL is positive", o.TTL)
	}
	return nil
}

// validPort reports whether port is a port number, 1 to 65535.
func validPort(port string) bool {
	n, err := strconv.Atoi(port)
	return err == nil && n >= 1 && n <= 65535
}

// Serve serves the functions o.Funcs of eng over gRPC until ctx is
// cancelled, registered in o.Registry while it does: it registers on start
// (a registry it cannot reach is logged, and tried again with backoff up
// to 5s while the provider serves; a registry that is not a NATS URL is
// an error at once), refreshes the registration every
// third of its TTL, and on cancellation
// deregisters first (callers stop choosing it), then lets the calls in
// flight finish (within o.Drain) and returns nil; calls still running
// after o.Drain are cut (their connections closed) and Serve returns at
// once, not waiting for their functions, an error wrapping ErrCallsCut.
func Serve(ctx context.Context, eng Invoker, o ServeOptions) error {
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	if o.Bucket == "" {
		o.Bucket = DefaultBucket
	}
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	if o.Drain <= 0 {
		o.Drain = 10 * time.Second
	}
	if o.Weight <= 0 {
		o.Weight = DefaultWeight
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxMessage <= 0 {
		o.MaxMessage = DefaultMaxMessage
	}
	if err := o.Validate(); err != nil {
		return err
	}
	register := o.registers()
	if register {
		o.Registry, _ = NATSURL(o.Registry) // the port written out, for the logs
	}
	if len(o.Funcs) == 0 {
		return errors.New("nothing to serve: the configuration has no function with a local body")
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", o.Listen, err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(codec{}), grpc.MaxRecvMsgSize(o.MaxMessage), grpc.MaxSendMsgSize(o.MaxMessage),
		// A batch's message in one write and one flow-control window.
		grpc.WriteBufferSize(transportBuffer), grpc.ReadBufferSize(transportBuffer),
		grpc.InitialWindowSize(transportWindow), grpc.InitialConnWindowSize(transportWindow))
	impl := &server{eng: eng, funcs: o.Funcs, log: o.Logger, max: o.MaxMessage, draining: make(chan struct{})}
	srv.RegisterService(&serviceDesc, impl)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	idb := make([]byte, 8)
	_, _ = rand.Read(idb)
	p := Provider{ID: hex.EncodeToString(idb), Service: o.Service, Addr: ln.Addr().String(), Version: o.Version, Group: o.Group,
		Weight: o.Weight, Funcs: slices.Sorted(slices.Values(o.Funcs)), TTL: o.TTL}
	var reg *registrar
	if register {
		// A registry down at start does not stop the provider: it serves,
		// and registers once the registry answers (see registrar).
		reg = newRegistrar(o, p)
		_ = reg.start()
	}
	if o.Ready != nil {
		o.Ready(p)
	}
	select {
	case <-ctx.Done():
	case err := <-served:
		if reg != nil {
			reg.close()
		}
		return fmt.Errorf("serving on %s: %w", p.Addr, err)
	}
	if reg != nil {
		reg.close()
	}
	close(impl.draining) // call streams end once their call in flight has
	limit := time.After(o.Drain)
	// While calls are in flight, and for drainGrace after the
	// deregistration at least, the server still answers, refusing new
	// calls as the drain's, so that callers racing the deregistration
	// (their registry watch not yet told) go to another provider knowing
	// why; GracefulStop closes the listener at once, and a call that
	// dials it then is refused as by a provider that is down.
	graceEnd := time.Now().Add(min(drainGrace, o.Drain/2))
	for impl.inflight.Load() > 0 || time.Now().Before(graceEnd) {
		select {
		case <-limit:
			return cut(srv, impl, o.Drain)
		case <-time.After(5 * time.Millisecond):
		}
	}
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
		return nil
	case <-limit:
	}
	return cut(srv, impl, o.Drain)
}

// drainGrace is how long (at most half the drain limit) a draining
// provider keeps its listener open after deregistering, refusing new
// calls as the drain's: the time its callers' registry watches take to
// see it gone.
const drainGrace = time.Second

// cut stops srv at once, after the drain limit passed with calls still in
// flight.
func cut(srv *grpc.Server, impl *server, drain time.Duration) error {
	// Calls still in flight: their connections are closed (their callers
	// see the provider fail and go to another), and Serve returns without
	// waiting for their functions, which may never return (one that
	// ignores its context): the process that called Serve exits.
	n := impl.inflight.Load()
	srv.Stop()
	return fmt.Errorf("%w: %d calls still running after the drain limit of %s were cut", ErrCallsCut, n, drain)
}

// ErrCallsCut is what Serve returns, wrapped, when calls were still in
// flight once the drain limit had passed: it closed their connections
// and returned without waiting for them.
var ErrCallsCut = errors.New("remote: drain cut calls in flight")

// refreshEvery is how often a registration of the given TTL is written
// again: every third of its TTL, and at least every third of the bucket's
// own TTL, so that storage never removes a live provider's registration
// whatever TTL it registered with.
func refreshEvery(ctx context.Context, kv jetstream.KeyValue, ttl time.Duration) (time.Duration, error) {
	every := ttl / 3
	st, err := kv.Status(ctx)
	if err != nil {
		return 0, fmt.Errorf("bucket status: %w", err)
	}
	if b := st.TTL(); b > 0 && b/3 < every {
		every = b / 3
	}
	return every, nil
}

// server is the gRPC service over an Invoker.
type server struct {
	eng   Invoker
	funcs []string
	log   *slog.Logger
	max   int // the largest reply, in bytes; 0: DefaultMaxMessage
	// draining is closed when Serve stops: a call stream ends as soon as
	// it has no call in flight, so that the graceful stop does not wait
	// for callers to close their idle streams.
	draining chan struct{}
	inflight atomic.Int64 // the calls running (functions invoked)
}

// drainingMsg is the message of the Unavailable status a draining
// provider answers a call with that it will not run (one that came after
// its drain began): callers take it as the provider's going away, not a
// failure of it, and call another (see draining).
const drainingMsg = "kisflow: the provider is stopping (draining); call another"

// draining reports whether err is a draining provider's refusal
// (drainingMsg), or the end of a call stream without its reply, which only
// a provider's drain does.
func draining(err error) bool {
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return false
	}
	st := se.GRPCStatus()
	return st.Code() == codes.Unavailable && st.Message() == drainingMsg
}

// The states of a call stream's loop (server.calls).
const (
	streamIdle   = iota // waiting for a request
	streamBusy          // a call in flight
	streamClosed        // ended by the drain: a request now is not run
)

// calls serves the calls of one stream, one after the other, until the
// caller closes it, or Serve drains (at once when no call is in flight,
// else once its reply is sent). A request received as the drain ends the
// stream is not run: the caller sees the stream end without its reply,
// a provider failure, and tries another provider.
func (s *server) calls(ss grpc.ServerStream) error {
	var state atomic.Int32
	done := make(chan error, 1)
	go func() { done <- s.callLoop(ss, &state) }()
	select {
	case err := <-done:
		return err
	case <-s.draining:
	}
	if state.CompareAndSwap(streamIdle, streamClosed) {
		return nil // the loop's wait for a request ends with the stream
	}
	return <-done
}

func (s *server) callLoop(ss grpc.ServerStream, state *atomic.Int32) error {
	for {
		req := new(request)
		if err := ss.RecvMsg(req); err != nil {
			if errors.Is(err, io.EOF) {
				return nil // the caller closed the stream
			}
			return err
		}
		if !state.CompareAndSwap(streamIdle, streamBusy) {
			// The drain ended the stream as this request came: refused
			// as the drain's, so that the caller goes to another
			// provider without counting it as a failure.
			_ = ss.SendMsg(&reply{Code: codes.Unavailable, Message: drainingMsg})
			return nil
		}
		select {
		case <-s.draining:
			// A request that came once the drain had begun is not a call
			// in flight: refused the same way.
			state.Store(streamClosed)
			return ss.SendMsg(&reply{Code: codes.Unavailable, Message: drainingMsg})
		default:
		}
		rep, err := s.call(ss.Context(), req)
		if err != nil {
			st := status.Convert(err)
			rep = &reply{Code: st.Code(), Message: st.Message()}
		}
		if err := ss.SendMsg(rep); err != nil {
			return err
		}
		state.Store(streamIdle)
		select {
		case <-s.draining:
			if state.CompareAndSwap(streamIdle, streamClosed) {
				return nil
			}
		default:
		}
	}
}

func (s *server) call(ctx context.Context, req *request) (*reply, error) {
	select {
	case <-s.draining:
		return nil, status.Error(codes.Unavailable, drainingMsg)
	default:
	}
	if !slices.Contains(s.funcs, req.Func) {
		return nil, status.Errorf(codes.NotFound, "this provider does not serve function %q (it serves %v)", req.Func, s.funcs)
	}
	if req.Timeout > 0 {
		// A call on a stream: its deadline came in the request.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.Timeout)*time.Microsecond)
		defer cancel()
	}
	if len(req.Trace) > 0 {
		ctx = stream.ExtractTrace(ctx, req.Trace)
	} else if md, ok := metadata.FromIncomingContext(ctx); ok {
		h := map[string]string{}
		for _, k := range []string{"traceparent", "tracestate"} {
			if v := md.Get(k); len(v) > 0 {
				h[k] = v[0]
			}
		}
		ctx = stream.ExtractTrace(ctx, h)
	}
	s.inflight.Add(1)
	out, err := s.eng.Invoke(ctx, req.Func, req.Params, req.In)
	s.inflight.Add(-1)
	if err != nil {
		switch {
		case errors.Is(err, kisflow.ErrUnknownFunction):
			return nil, status.Error(codes.NotFound, err.Error())
		case stream.IsPermanent(err):
			return nil, status.Error(codes.InvalidArgument, err.Error())
		case stream.IsFatal(err):
			return nil, status.Error(codes.FailedPrecondition, err.Error())
		case ctx.Err() != nil:
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return nil, status.Error(codes.Aborted, err.Error())
	}
	rep, err := replyOf(out)
	if err != nil {
		// An output row JSON cannot hold (a calc's +Inf): the rows it
		// came from are the call's row errors, as a local sink refuses
		// such a row alone, not a failure of the batch.
		if rep, err = s.isolate(ctx, req, err); err != nil {
			return nil, err
		}
	}
	limit := s.max
	if limit <= 0 {
		limit = DefaultMaxMessage
	}
	if size := replySize(rep); size > limit {
		// Sent, the reply would end the call's stream: the caller splits
		// the batch instead.
		return nil, status.Errorf(codes.ResourceExhausted, "function %q: its reply of %d rows for %d rows encodes to about %d bytes, over the limit of %d bytes per remote call", req.Func, rep.Rows.len(), len(req.In), size, limit)
	}
	return rep, nil
}

// replyOf is the reply of an Outcome, or the error of an output row that
// cannot be encoded.
func replyOf(out *driver.Outcome) (*reply, error) {
	rep := &reply{DataReuse: out.DataReuse, ForceEntryNext: out.ForceEntryNext, JumpFunc: out.JumpFunc, Abort: out.Abort}
	for _, re := range out.RowErrors {
		rep.Errors = append(rep.Errors, rowError{Index: re.Index, Error: re.Msg})
	}
	// out.Rows is the engine's copy for this call: the reply may hold it.
	var err error
	if rep.Rows, err = encodeRows(out.Rows, true); err != nil {
		return nil, err
	}
	return rep, nil
}

// isolate answers a call whose output held a row that cannot be encoded
// (encErr): it runs the function on each input row alone to find the rows
// whose output cannot be encoded, then on the others together, and
// replies with that run's outcome and the rows found as row errors
// (remote functions are idempotent: see the README). When the rows alone
// all encode, the batch's output cannot be told apart by row, and the
// call fails with encErr, as before.
func (s *server) isolate(ctx context.Context, req *request, encErr error) (*reply, error) {
	fail := func(err error) error {
		return status.Error(codes.Aborted, fmt.Sprintf("function %q: output %v", req.Func, err))
	}
	var bad []rowError
	var good []any
	var at []int // the input index of each good row
	for i, row := range req.In {
		out, err := s.eng.Invoke(ctx, req.Func, req.Params, []any{row})
		if err != nil {
			return nil, fail(encErr)
		}
		if _, err := encodeRows(out.Rows, false); err != nil {
			bad = append(bad, rowError{Index: i, Error: fmt.Sprintf("function %q: its output row cannot travel back to the caller as JSON: %v", req.Func, errors.Unwrap(err))})
			continue
		}
		good = append(good, row)
		at = append(at, i)
	}
	if len(bad) == 0 {
		return nil, fail(encErr)
	}
	rep := &reply{}
	if len(good) > 0 {
		out, err := s.eng.Invoke(ctx, req.Func, req.Params, good)
		if err != nil {
			return nil, fail(encErr)
		}
		if rep, err = replyOf(out); err != nil {
			return nil, fail(err)
		}
	}
	for i, e := range rep.Errors {
		if e.Index < 0 || e.Index >= len(at) {
			return nil, fail(encErr)
		}
		rep.Errors[i].Index = at[e.Index]
	}
	rep.Errors = append(rep.Errors, bad...)
	slices.SortFunc(rep.Errors, func(a, b rowError) int { return a.Index - b.Index })
	s.log.Warn("remote: output rows that cannot be encoded are row errors", "func", req.Func, "rows", len(bad), "first", bad[0].Error)
	return rep, nil
}
