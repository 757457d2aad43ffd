package remote

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"unsafe"

	gojson "github.com/goccy/go-json"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"

	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/internal/jsonl"
)

// serviceName names the gRPC service; callMethod is its unary method (one
// call a gRPC call), callsMethod its streaming one (calls one after the
// other on a stream that stays open: see conn).
const (
	serviceName = "kisflow.remote.v1.Functions"
	callMethod  = "/" + serviceName + "/Call"
	callsMethod = "/" + serviceName + "/Calls"
)

// The transport's buffers and flow-control windows: a batch of a thousand
// rows (tens of kilobytes) goes out in one write and is never held up
// waiting for a window update.
const (
	transportBuffer = 256 << 10
	transportWindow = 4 << 20
)

// request is one call: a batch of rows for one function.
type request struct {
	Flow   string            `json:"flow,omitempty"`
	Func   string            `json:"func"`
	Params map[string]string `json:"params,omitempty"`
	// On a stream, what a unary call carries in gRPC metadata and its
	// deadline: the trace context (traceparent, tracestate) and the
	// attempt's time left, in microseconds.
	Trace   map[string]string `json:"trace,omitempty"`
	Timeout int64             `json:"timeout_us,omitempty"`
	Rows    rowTexts          `json:"-"` // framed after the header
	In      []any             `json:"-"` // the rows received, each a []byte
}

// reply is what the function produced.
type reply struct {
	Rows           rowTexts   `json:"-"` // framed after the header
	In             []any      `json:"-"` // the rows received, each a []byte
	Errors         []rowError `json:"errors,omitempty"`
	DataReuse      bool       `json:"data_reuse,omitempty"`
	ForceEntryNext bool       `json:"force_entry_next,omitempty"`
	JumpFunc       string     `json:"jump_func,omitempty"`
	Abort          bool       `json:"abort,omitempty"`
	// On a stream, a call that failed: its gRPC status (a unary call's
	// is the call's own).
	Code    codes.Code `json:"code,omitempty"`
	Message string     `json:"message,omitempty"`
}

type rowError struct {
	Index int    `json:"index"`
	Error string `json:"error"`
}

// framed is a message whose rows travel after its JSON header, each as
// its length and its bytes: rows are JSON text already, and framing them
// saves re-validating and copying every row through a JSON array (a batch
// of 1000 small rows costs tens of microseconds instead of milliseconds).
// Rows are sent from Rows and received into In, as the []byte rows the
// engine takes: no second slice of them is made.
type framed interface {
	rowsOf() rowTexts
	received(rows []any)
}

func (r *request) rowsOf() rowTexts    { return r.Rows }
func (r *reply) rowsOf() rowTexts      { return r.Rows }
func (r *request) received(rows []any) { r.In = rows }
func (r *reply) received(rows []any)   { r.In = rows }

// rowTexts are the rows of a message as JSON text: the engine's rows
// themselves when every one is JSON bytes (bytes: no slice of the batch is
// made for the message), else the text of each (text).
type rowTexts struct {
	bytes []any
	text  []json.RawMessage
}

// textRows are rows already written as JSON text.
func textRows(text []json.RawMessage) rowTexts { return rowTexts{text: text} }

func (r rowTexts) len() int {
	if r.bytes != nil {
		return len(r.bytes)
	}
	return len(r.text)
}

// at returns row i's text.
func (r rowTexts) at(i int) []byte {
	if r.bytes != nil {
		return r.bytes[i].([]byte)
	}
	return r.text[i]
}

// slice returns rows i to j-1.
func (r rowTexts) slice(i, j int) rowTexts {
	if r.bytes != nil {
		return rowTexts{bytes: r.bytes[i:j]}
	}
	return rowTexts{text: r.text[i:j]}
}

// DefaultMaxMessage is the largest message a remote call sends or takes
// by default, in bytes, either way (gRPC's message limit, on both ends):
// a batch whose rows encode to more is split into smaller calls.
const DefaultMaxMessage = 256 << 20

// headerBound bounds the bytes of a message's JSON header and framing
// beyond its rows' own and their lengths'.
const headerBound = 1 << 10

// rowsSize is the bytes rows take in a message: their text and lengths.
func rowsSize(rows rowTexts) int {
	n := 0
	for i := range rows.len() {
		n += len(rows.at(i)) + binary.MaxVarintLen64
	}
	return n
}

// requestSize bounds the encoded size of req (its trace context, added
// when it is sent, included): its text escaped at worst doubles.
func requestSize(req *request) int {
	n := headerBound + 2*(len(req.Flow)+len(req.Func))
	for k, v := range req.Params {
		n += 2*(len(k)+len(v)) + 8
	}
	return n + rowsSize(req.Rows)
}

// replySize bounds the encoded size of rep.
func replySize(rep *reply) int {
	n := headerBound + 2*(len(rep.JumpFunc)+len(rep.Message))
	for _, e := range rep.Errors {
		n += 2*len(e.Error) + 32
	}
	return n + rowsSize(rep.Rows)
}

// codec is the service's codec, forced on both ends (so no process-wide
// registration is needed): a message is its JSON header, then its rows
// framed (uvarint lengths).
type codec struct{}

func (codec) Name() string { return "kisflow-json" }

func (codec) Marshal(v any) (mem.BufferSlice, error) {
	head, err := gojson.Marshal(v)
	if err != nil {
		return nil, err
	}
	f, ok := v.(framed)
	if !ok {
		return nil, fmt.Errorf("kisflow-json codec: cannot marshal %T", v)
	}
	rows := f.rowsOf()
	count := rows.len()
	n := binary.MaxVarintLen64 * (2 + count)
	n += len(head)
	for i := range count {
		n += len(rows.at(i))
	}
	// The buffer comes from a pool gRPC gives it back to once the message
	// is written: a batch's message is tens of kilobytes.
	bp := buffers.Get(n)
	b := (*bp)[:0]
	b = binary.AppendUvarint(b, uint64(len(head)))
	b = append(b, head...)
	b = binary.AppendUvarint(b, uint64(count))
	for i := range count {
		r := rows.at(i)
		b = binary.AppendUvarint(b, uint64(len(r)))
		b = append(b, r...)
	}
	*bp = b // within n: the same array
	return mem.BufferSlice{mem.NewBuffer(bp, buffers)}, nil
}

// bufferPool is a mem.BufferPool of messages' buffers that, unlike gRPC's
// default pool, does not zero a buffer it hands out again: the codec
// writes every byte of it.
type bufferPool struct{ p sync.Pool }

// buffers keeps the codec's buffers: the codec has no state of its own.
var buffers = new(bufferPool)

func (bp *bufferPool) Get(n int) *[]byte {
	if b, ok := bp.p.Get().(*[]byte); ok && cap(*b) >= n {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, max(n, 64<<10))
	return &b
}

func (bp *bufferPool) Put(b *[]byte) { bp.p.Put(b) }

var errTruncated = errors.New("kisflow-json codec: truncated message")

func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(framed)
	if !ok {
		return fmt.Errorf("kisflow-json codec: cannot unmarshal into %T", v)
	}
	b := data.Materialize()
	next := func() ([]byte, error) {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return nil, errTruncated
		}
		out := b[k : k+int(n) : k+int(n)]
		b = b[k+int(n):]
		return out, nil
	}
	head, err := next()
	if err != nil {
		return err
	}
	if err := gojson.Unmarshal(head, v); err != nil {
		return err
	}
	count, k := binary.Uvarint(b)
	if k <= 0 || count > uint64(len(b)) {
		return errTruncated
	}
	b = b[k:]
	// Each row is an interface over its slice header, the headers in one
	// array: one allocation for the batch instead of one a row (boxing a
	// []byte into an interface allocates its header; a batch of a
	// thousand rows spent a fifth of the call's CPU time there).
	hdrs := make([][]byte, count)
	rows := make([]any, count)
	for i := range rows {
		row, err := next()
		if err != nil {
			return err
		}
		hdrs[i] = row
		setBytes(&rows[i], &hdrs[i])
	}
	f.received(rows)
	return nil
}

// bytesType is the type word of an interface holding a []byte.
var bytesType = func() unsafe.Pointer {
	var v any = []byte(nil)
	return (*[2]unsafe.Pointer)(unsafe.Pointer(&v))[0]
}()

// setBytes makes *dst the []byte *b, as `*dst = *b` does but without
// copying the slice header to the heap: the interface's data word points at
// *b, which must not change afterwards (an interface's value never does).
func setBytes(dst *any, b *[]byte) {
	e := (*[2]unsafe.Pointer)(unsafe.Pointer(dst))
	e[0], e[1] = bytesType, unsafe.Pointer(b)
}

// encodeRows gives the rows' JSON: JSON text ([]byte, json.RawMessage or a
// string) as it is (bytes unchecked: the engine reads them as JSON), a flat
// map (the rows of a YAML calc) written by hand into one buffer for the
// batch, anything else marshalled. A row that cannot be encoded is an
// error naming its index. When every row is JSON bytes, the result holds
// rows itself, which must then stay as they are until the message is
// sent; keep == false makes it hold a copy.
func encodeRows(rows []any, keep bool) (rowTexts, error) {
	if keep && allBytes(rows) {
		return rowTexts{bytes: rows}, nil
	}
	out := make([]json.RawMessage, len(rows))
	var buf []byte
	var spans [][3]int // row index, start and end in buf
	for i, row := range rows {
		switch v := row.(type) {
		case []byte:
			// Bytes rows are JSON to the engine (sources give them).
			if len(v) > 0 {
				out[i] = v
				continue
			}
		case json.RawMessage:
			if json.Valid(v) {
				out[i] = v
				continue
			}
		case string:
			// Text rows are JSON to the engine, as []byte ones are.
			if json.Valid([]byte(v)) {
				out[i] = json.RawMessage(v)
				continue
			}
		case map[string]any:
			if buf == nil {
				buf = make([]byte, 0, 64*(len(rows)-i))
			}
			start := len(buf)
			var ok bool
			if buf, ok = jsonl.AppendFlatUnordered(buf, v); ok {
				spans = append(spans, [3]int{i, start, len(buf)})
				continue
			}
			buf = buf[:start]
		}
		// Map keys in any order: the row is read by field, and sorting
		// them costs a tenth of a call.
		b, err := gojson.MarshalWithOption(row, gojson.UnorderedMap())
		if err != nil {
			return rowTexts{}, fmt.Errorf("row %d of type %T cannot travel to or from a remote function as JSON: %w", i, row, err)
		}
		out[i] = b
	}
	for _, s := range spans {
		out[s[0]] = buf[s[1]:s[2]:s[2]]
	}
	return textRows(out), nil
}

// allBytes reports whether every row is a non-empty []byte.
func allBytes(rows []any) bool {
	for _, row := range rows {
		if b, ok := row.([]byte); !ok || len(b) == 0 {
			return false
		}
	}
	return true
}

// functionsServer is the handler type of the service.
type functionsServer interface {
	call(ctx context.Context, req *request) (*reply, error)
	calls(ss grpc.ServerStream) error
}

// callsDesc is the streaming method: requests and replies one for one,
// in order.
var callsDesc = grpc.StreamDesc{
	StreamName:    "Calls",
	ServerStreams: true,
	ClientStreams: true,
	Handler:       func(srv any, ss grpc.ServerStream) error { return srv.(functionsServer).calls(ss) },
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: serviceName,
	HandlerType: (*functionsServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Call",
		Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			req := new(request)
			if err := dec(req); err != nil {
				return nil, err
			}
			h := func(ctx context.Context, r any) (any, error) { return srv.(functionsServer).call(ctx, r.(*request)) }
			if icpt == nil {
				return h(ctx, req)
			}
			return icpt(ctx, req, &grpc.UnaryServerInfo{Server: srv, FullMethod: callMethod}, h)
		},
	}},
	Streams:  []grpc.StreamDesc{callsDesc},
	Metadata: "kisflow/remote",
}

// outcome turns a reply into the engine's Outcome; rows stay JSON text.
func (r *reply) outcome() *driver.Outcome {
	out := &driver.Outcome{DataReuse: r.DataReuse, ForceEntryNext: r.ForceEntryNext, JumpFunc: r.JumpFunc, Abort: r.Abort}
	if len(r.In) > 0 {
		out.Rows = r.In
	}
	for _, e := range r.Errors {
		out.RowErrors = append(out.RowErrors, driver.RowError{Index: e.Index, Msg: e.Error})
	}
	return out
}
