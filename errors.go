package kisflow

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors, matched with errors.Is.
var (
	// ErrUnknownFlow: the engine's configuration has no flow of that name.
	ErrUnknownFlow = errors.New("unknown flow")
	// ErrFlowDisabled: the flow's status is 0.
	ErrFlowDisabled = errors.New("flow is disabled")
	// ErrUnknownFunction: a flow names a function no Go code registered.
	ErrUnknownFunction = errors.New("function not registered")
	// ErrNoConnector: the running function has no connector (option.cname).
	ErrNoConnector = errors.New("function has no connector: set option.cname in its config")
	// ErrDuplicate: a name is registered twice.
	ErrDuplicate = errors.New("already registered")
	// ErrClosed: the engine was closed.
	ErrClosed = errors.New("engine is closed")
)

// FuncError is the failure of one function during a flow run: the error it
// returned, or the panic it raised.
type FuncError struct {
	Flow  string // flow name
	Func  string // function name
	Layer int    // position of the function in the flow, from 0
	Err   error
}

func (e *FuncError) Error() string {
	return fmt.Sprintf("flow %q: function %q (step %d): %v", e.Flow, e.Func, e.Layer+1, e.Err)
}

// Unwrap returns the function's error.
func (e *FuncError) Unwrap() error { return e.Err }

// PanicError is a panic raised by a function, recovered into an error.
type PanicError struct {
	Value any    // what was passed to panic
	Stack []byte // the goroutine's stack at the panic
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// RowError is a row a function could not receive: it could not be converted
// to the function's parameter type, an expression of a function written in
// YAML failed on it, or it lacks a field of the first function's
// source.must (Err is then a *MissingFieldError). The row is left out of
// that call; the other rows go on. A run returns its RowErrors in
// Result.Rejected.
type RowError struct {
	Flow  string // flow name
	Func  string // function name
	Layer int    // position of the function in the flow, from 0
	Index int    // position of the row in the function's input, from 0
	Row   any    // the row as it arrived
	Err   error
}

func (e *RowError) Error() string {
	return fmt.Sprintf("flow %q: function %q: row %d: %v", e.Flow, e.Func, e.Index, e.Err)
}

// Unwrap returns the conversion error.
func (e *RowError) Unwrap() error { return e.Err }

// RejectedError is what Flow.Run returns when rows could not be converted to
// a function's parameter type: the run went on without them, its Result
// holds the rows the other rows produced, and the rejected rows are here
// (and in Result.Rejected), so that none can vanish unnoticed.
type RejectedError struct {
	Flow string
	Rows []*RowError
}

func (e *RejectedError) Error() string {
	if len(e.Rows) == 1 {
		return fmt.Sprintf("flow %q: 1 row rejected: %v", e.Flow, e.Rows[0])
	}
	return fmt.Sprintf("flow %q: %d rows rejected, the first: %v", e.Flow, len(e.Rows), e.Rows[0])
}

// Unwrap returns the RowErrors, for errors.As and errors.Is.
func (e *RejectedError) Unwrap() []error {
	out := make([]error, len(e.Rows))
	for i, r := range e.Rows {
		out[i] = r
	}
	return out
}

// MissingFieldError is why a row was rejected before a flow's first
// function: it lacks fields that function's `source.must` lists (absent,
// or null). Fields are named as source.must names them ("a.b" for field b
// of the object in field a).
type MissingFieldError struct {
	Fields []string // the missing fields, in source.must order
	Reason string   // why the row has no fields at all ("" when it has some)
}

func (e *MissingFieldError) Error() string {
	var b strings.Builder
	b.WriteString("missing required field")
	if len(e.Fields) > 1 {
		b.WriteByte('s')
	}
	for i, f := range e.Fields {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, " %q", f)
	}
	b.WriteString(" (source.must)")
	if e.Reason != "" {
		b.WriteString(": ")
		b.WriteString(e.Reason)
	}
	return b.String()
}
