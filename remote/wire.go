package remote

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	gojson "github.com/goccy/go-json"
	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"

	"github.com/kisflow-go/kisflow/driver"
)

// serviceName and callMethod name the gRPC service and its one method.
const (
	serviceName = "kisflow.remote.v1.Functions"
	callMethod  = "/" + serviceName + "/Call"
)

// request is one call: a batch of rows for one function.
type request struct {
	Flow   string            `json:"flow,omitempty"`
	Func   string            `json:"func"`
	Params map[string]string `json:"params,omitempty"`
	Rows   []json.RawMessage `json:"-"` // framed after the header
}

// reply is what the function produced.
type reply struct {
	Rows           []json.RawMessage `json:"-"` // framed after the header
	Errors         []rowError        `json:"errors,omitempty"`
	DataReuse      bool              `json:"data_reuse,omitempty"`
	ForceEntryNext bool              `json:"force_entry_next,omitempty"`
	JumpFunc       string            `json:"jump_func,omitempty"`
	Abort          bool              `json:"abort,omitempty"`
}

type rowError struct {
	Index int    `json:"index"`
	Error string `json:"error"`
}

// framed is a message whose rows travel after its JSON header, each as
// its length and its bytes: rows are JSON text already, and framing them
// saves re-validating and copying every row through a JSON array (a batch
// of 1000 small rows costs tens of microseconds instead of milliseconds).
type framed interface{ rowsOf() *[]json.RawMessage }

func (r *request) rowsOf() *[]json.RawMessage { return &r.Rows }
func (r *reply) rowsOf() *[]json.RawMessage   { return &r.Rows }

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
	rows := *f.rowsOf()
	n := binary.MaxVarintLen64 * (2 + len(rows))
	n += len(head)
	for _, r := range rows {
		n += len(r)
	}
	b := make([]byte, 0, n)
	b = binary.AppendUvarint(b, uint64(len(head)))
	b = append(b, head...)
	b = binary.AppendUvarint(b, uint64(len(rows)))
	for _, r := range rows {
		b = binary.AppendUvarint(b, uint64(len(r)))
		b = append(b, r...)
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(framed)
	if !ok {
		return fmt.Errorf("kisflow-json codec: cannot unmarshal into %T", v)
	}
	b := data.Materialize()
	bad := errors.New("kisflow-json codec: truncated message")
	next := func() ([]byte, error) {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return nil, bad
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
		return bad
	}
	b = b[k:]
	rows := make([]json.RawMessage, count)
	for i := range rows {
		if rows[i], err = next(); err != nil {
			return err
		}
	}
	*f.rowsOf() = rows
	return nil
}

// encodeRow gives a row's JSON: JSON text ([]byte, json.RawMessage or a
// string) as it is (bytes unchecked: the engine reads them as JSON), anything
// else marshalled.
func encodeRow(row any) (json.RawMessage, error) {
	switch v := row.(type) {
	case json.RawMessage:
		if json.Valid(v) {
			return v, nil
		}
	case []byte:
		// Bytes rows are JSON to the engine (sources give them).
		if len(v) > 0 {
			return v, nil
		}
	case string:
		// Text rows are JSON to the engine, as []byte ones are.
		if json.Valid([]byte(v)) {
			return json.RawMessage(v), nil
		}
	}
	// Map keys in any order: the row is read by field, and sorting them
	// costs a tenth of a call.
	b, err := gojson.MarshalWithOption(row, gojson.UnorderedMap())
	if err != nil {
		return nil, fmt.Errorf("row of type %T cannot travel to a remote function as JSON: %w", row, err)
	}
	return b, nil
}

// functionsServer is the handler type of the service.
type functionsServer interface {
	call(ctx context.Context, req *request) (*reply, error)
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
	Metadata: "kisflow/remote",
}

// outcome turns a reply into the engine's Outcome; rows stay JSON text.
func (r *reply) outcome() *driver.Outcome {
	out := &driver.Outcome{DataReuse: r.DataReuse, ForceEntryNext: r.ForceEntryNext, JumpFunc: r.JumpFunc, Abort: r.Abort}
	if len(r.Rows) > 0 {
		out.Rows = make([]any, len(r.Rows))
		for i, b := range r.Rows {
			out.Rows[i] = []byte(b)
		}
	}
	for _, e := range r.Errors {
		out.RowErrors = append(out.RowErrors, driver.RowError{Index: e.Index, Msg: e.Error})
	}
	return out
}
