package remote

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kisflow-go/kisflow/stream"
)

// maxIdleStreams bounds the call streams a connection keeps open while
// no call uses them (more are opened when more calls run at once).
const maxIdleStreams = 8

// conn is the connection to one provider. Its calls go over call streams
// (the Calls method) that stay open from one call to the next: a call is
// then one message each way, instead of a gRPC call's stream opened and
// closed with headers and trailers each time (on the loaded test machine
// that was a third of a batch's round trip). A stream carries one call at
// a time; calls at once take streams of their own.
type conn struct {
	cc    *grpc.ClientConn
	mu    sync.Mutex
	idle  []*callStream
	unary atomic.Bool // the provider has no Calls method (an earlier kisflow)
}

// callStream is an open call stream and what ends it.
type callStream struct {
	st     grpc.ClientStream
	cancel context.CancelFunc
}

// invoke makes one call: req in, its reply into rep. actx is the attempt's
// context (its timeout); ctx the caller's, whose trace the call carries.
// Errors are gRPC status errors, as a unary call's.
func (cn *conn) invoke(ctx, actx context.Context, req *request, rep *reply) error {
	if cn.unary.Load() {
		return cn.unaryCall(ctx, actx, req, rep)
	}
	// The request as this attempt sends it: calls to other providers
	// (forking, broadcast) send req at the same time.
	sent := *req
	sent.Trace = nil
	stream.InjectTrace(ctx, func(k, v string) {
		if sent.Trace == nil {
			sent.Trace = map[string]string{}
		}
		sent.Trace[k] = v
	})
	drained := false // a stream of this call was ended by the drain
	for {
		cs, reused, err := cn.take(actx)
		if err != nil {
			if drained && status.Code(err) == codes.Unavailable {
				return status.Error(codes.Unavailable, drainingMsg)
			}
			return err
		}
		if dl, ok := actx.Deadline(); ok {
			sent.Timeout = max(time.Until(dl).Microseconds(), 1)
		}
		*rep = reply{}
		err = cs.roundTrip(actx, &sent, rep)
		switch {
		case err == nil:
			cn.put(cs)
			if rep.Code != codes.OK {
				return status.Error(rep.Code, rep.Message)
			}
			return nil
		case !reused && status.Code(err) == codes.Unimplemented:
			// An earlier provider, with the unary method only.
			cn.unary.Store(true)
			return cn.unaryCall(ctx, actx, req, rep)
		case status.Code(err) == codes.ResourceExhausted:
			return err // the message's size, not the stream's end
		case reused && actx.Err() == nil:
			// A stream that was idle may have ended with its transport
			// (the provider restarted) or its provider's drain: the
			// others idle with it too. Once more on a new stream; if the
			// provider's drain ended it and that one cannot be had (its
			// listener is closed), the call is refused as the drain's.
			cn.drop()
			drained = drained || draining(err)
			continue
		case drained && status.Code(err) == codes.Unavailable:
			return status.Error(codes.Unavailable, drainingMsg)
		}
		return err
	}
}

// unaryCall makes the call as one gRPC call, the trace in its metadata.
func (cn *conn) unaryCall(ctx, actx context.Context, req *request, rep *reply) error {
	stream.InjectTrace(ctx, func(k, v string) { actx = metadata.AppendToOutgoingContext(actx, k, v) })
	*rep = reply{}
	return cn.cc.Invoke(actx, callMethod, req, rep)
}

// take returns an idle stream (reused) or opens one, within actx.
func (cn *conn) take(actx context.Context) (_ *callStream, reused bool, _ error) {
	cn.mu.Lock()
	if n := len(cn.idle); n > 0 {
		cs := cn.idle[n-1]
		cn.idle = cn.idle[:n-1]
		cn.mu.Unlock()
		return cs, true, nil
	}
	cn.mu.Unlock()
	// The stream outlives this call: its context is not actx, but it is
	// cancelled if actx ends while it opens (a provider that does not
	// answer a connection waits out the attempt's timeout, as a unary
	// call does).
	sctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(actx, cancel)
	st, err := cn.cc.NewStream(sctx, &callsDesc, callsMethod)
	if !stop() {
		cancel()
		return nil, false, status.FromContextError(actx.Err()).Err()
	}
	if err != nil {
		cancel()
		return nil, false, err
	}
	return &callStream{st: st, cancel: cancel}, false, nil
}

// roundTrip sends req and receives its reply, within actx; on an error
// the stream is cancelled (it may hold half a call).
func (cs *callStream) roundTrip(actx context.Context, req *request, rep *reply) (err error) {
	stop := context.AfterFunc(actx, cs.cancel)
	defer func() {
		if !stop() {
			err = status.FromContextError(actx.Err()).Err()
		}
		if err != nil {
			cs.cancel()
		}
	}()
	err = cs.st.SendMsg(req)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	// io.EOF from SendMsg: the stream ended; RecvMsg says how.
	err = cs.st.RecvMsg(rep)
	if errors.Is(err, io.EOF) {
		// The provider ended the stream without an answer: only its
		// drain does (see server.calls).
		return status.Error(codes.Unavailable, drainingMsg)
	}
	return err
}

// put keeps cs for the next call, or closes it when enough are idle.
func (cn *conn) put(cs *callStream) {
	cn.mu.Lock()
	if len(cn.idle) < maxIdleStreams {
		cn.idle = append(cn.idle, cs)
		cs = nil
	}
	cn.mu.Unlock()
	if cs != nil {
		cs.cancel()
	}
}

// drop closes the idle streams.
func (cn *conn) drop() {
	cn.mu.Lock()
	idle := cn.idle
	cn.idle = nil
	cn.mu.Unlock()
	for _, cs := range idle {
		cs.cancel()
	}
}

// close closes the idle streams and the connection.
func (cn *conn) close() error {
	cn.drop()
	return cn.cc.Close()
}
