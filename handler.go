package kisflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"unsafe"
)

// Handler is the Go body of a function, ready to be bound to flow steps. Make
// one with Func, FuncValues or FuncRows (no reflection at call time), or let
// Registry.Register analyse a plain Go func once by reflection.
type Handler interface {
	// bind returns the per-flow-instance caller; it keeps scratch buffers,
	// so each flow instance (and each Fork) gets its own.
	bind(fl *flow, layer int) binding
	signature() string
}

// binding calls a handler for one flow instance.
type binding interface {
	call(ctx context.Context, in []any) error
}

// Func makes a Handler from a function over pointer rows, the fastest form:
// rows that already are *T pass as they are; T rows are copied once; JSON
// strings, []byte and maps are decoded with the engine's Codec. Rows that do
// not convert are left out and reported as RowErrors.
//
// The slice is valid only during the call; keep rows, not the slice.
func Func[T any](fn func(ctx context.Context, f Flow, rows []*T) error) Handler {
	return ptrHandler[T]{fn: fn}
}

// FuncValues makes a Handler from a function over value rows: T rows pass as
// they are, *T rows are dereferenced, the rest is decoded as Func does.
func FuncValues[T any](fn func(ctx context.Context, f Flow, rows []T) error) Handler {
	return valHandler[T]{fn: fn}
}

// FuncRows makes a Handler from a function that takes the rows as they are.
func FuncRows(fn func(ctx context.Context, f Flow, rows []any) error) Handler {
	return rowsHandler{fn: fn}
}

// FuncNoRows makes a Handler from a function that reads rows, if at all,
// through Flow.Input.
func FuncNoRows(fn func(ctx context.Context, f Flow) error) Handler {
	return noRowsHandler{fn: fn}
}

type ptrHandler[T any] struct {
	fn func(context.Context, Flow, []*T) error
}

func (h ptrHandler[T]) bind(fl *flow, layer int) binding {
	return &ptrBinding[T]{fn: h.fn, fl: fl, layer: layer}
}

func (h ptrHandler[T]) signature() string { return reflect.TypeOf(h.fn).String() }

type ptrBinding[T any] struct {
	fn    func(context.Context, Flow, []*T) error
	fl    *flow
	layer int
	buf   []*T
}

func (b *ptrBinding[T]) call(ctx context.Context, in []any) error {
	buf := b.buf[:0]
	for i, row := range in {
		switch v := row.(type) {
		case *T:
			buf = append(buf, v)
		case T:
			c := v
			buf = append(buf, &c)
		default:
			t := new(T)
			if err := b.fl.decode(row, t); err != nil {
				b.fl.reject(b.layer, i, row, err)
				continue
			}
			buf = append(buf, t)
		}
	}
	b.buf = buf
	err := b.fn(ctx, b.fl, buf)
	clear(buf)
	return err
}

type valHandler[T any] struct {
	fn func(context.Context, Flow, []T) error
}

func (h valHandler[T]) bind(fl *flow, layer int) binding {
	return &valBinding[T]{fn: h.fn, fl: fl, layer: layer}
}

func (h valHandler[T]) signature() string { return reflect.TypeOf(h.fn).String() }

type valBinding[T any] struct {
	fn    func(context.Context, Flow, []T) error
	fl    *flow
	layer int
	buf   []T
}

func (b *valBinding[T]) call(ctx context.Context, in []any) error {
	buf := b.buf[:0]
	for i, row := range in {
		switch v := row.(type) {
		case T:
			buf = append(buf, v)
		case *T:
			if v == nil {
				b.fl.reject(b.layer, i, row, errors.New("row is a nil pointer"))
				continue
			}
			buf = append(buf, *v)
		default:
			var t T
			if err := b.fl.decode(row, &t); err != nil {
				b.fl.reject(b.layer, i, row, err)
				continue
			}
			buf = append(buf, t)
		}
	}
	b.buf = buf
	err := b.fn(ctx, b.fl, buf)
	clear(buf)
	return err
}

type rowsHandler struct {
	fn func(context.Context, Flow, []any) error
}

func (h rowsHandler) bind(fl *flow, _ int) binding { return rowsBinding{fn: h.fn, fl: fl} }
func (h rowsHandler) signature() string            { return reflect.TypeOf(h.fn).String() }

type rowsBinding struct {
	fn func(context.Context, Flow, []any) error
	fl *flow
}

func (b rowsBinding) call(ctx context.Context, in []any) error { return b.fn(ctx, b.fl, in) }

type noRowsHandler struct {
	fn func(context.Context, Flow) error
}

func (h noRowsHandler) bind(fl *flow, _ int) binding { return noRowsBinding{fn: h.fn, fl: fl} }
func (h noRowsHandler) signature() string            { return reflect.TypeOf(h.fn).String() }

type noRowsBinding struct {
	fn func(context.Context, Flow) error
	fl *flow
}

func (b noRowsBinding) call(ctx context.Context, _ []any) error { return b.fn(ctx, b.fl) }

var (
	ctxType   = reflect.TypeFor[context.Context]()
	flowType  = reflect.TypeFor[Flow]()
	errorType = reflect.TypeFor[error]()
)

const wantSignature = "want func(context.Context, kisflow.Flow, []*T) error, with []T, []any or no rows parameter in place of []*T"

// handlerOf turns a registered value into a Handler: a Handler as is, the
// two unnamed no-reflection shapes directly, any other func by reflection.
// The reflection analysis happens here, once.
func handlerOf(fn any) (Handler, error) {
	switch f := fn.(type) {
	case nil:
		return nil, errors.New("nil function")
	case Handler:
		return f, nil
	case func(context.Context, Flow, []any) error:
		return FuncRows(f), nil
	case func(context.Context, Flow) error:
		return FuncNoRows(f), nil
	}
	v := reflect.ValueOf(fn)
	t := v.Type()
	if t.Kind() != reflect.Func {
		return nil, fmt.Errorf("%s is not a function; %s", t, wantSignature)
	}
	if v.IsNil() {
		return nil, errors.New("nil function")
	}
	bad := func(why string) error {
		return fmt.Errorf("bad signature %s: %s; %s", t, why, wantSignature)
	}
	switch {
	case t.IsVariadic():
		return nil, bad("variadic")
	case t.NumOut() != 1 || t.Out(0) != errorType:
		return nil, bad("it must return exactly one error")
	case t.NumIn() < 2 || t.NumIn() > 3:
		return nil, bad(fmt.Sprintf("%d parameters", t.NumIn()))
	case t.In(0) != ctxType:
		return nil, bad("the first parameter must be context.Context")
	case t.In(1) != flowType:
		return nil, bad("the second parameter must be kisflow.Flow")
	}
	h := &reflectHandler{fn: v, typ: t}
	if t.NumIn() == 2 {
		h.kind = reflectNoRows
		return h, nil
	}
	rows := t.In(2)
	if rows.Kind() != reflect.Slice {
		return nil, bad("the rows parameter must be a slice")
	}
	elem := rows.Elem()
	switch {
	case elem.Kind() == reflect.Interface && elem.NumMethod() == 0:
		h.kind = reflectAny
	case elem.Kind() == reflect.Interface:
		return nil, bad("rows of a non-empty interface type cannot be decoded")
	case elem.Kind() == reflect.Pointer && elem.Elem().Kind() != reflect.Pointer:
		h.kind, h.elem, h.base = reflectPtr, elem, elem.Elem()
	case elem.Kind() == reflect.Pointer:
		return nil, bad("rows of a pointer to pointer type")
	default:
		h.kind, h.elem, h.base = reflectVal, elem, elem
	}
	h.sliceType = rows
	return h, nil
}

type reflectKind int

const (
	reflectNoRows reflectKind = iota
	reflectAny
	reflectPtr
	reflectVal
)

// reflectHandler is a Go func analysed at registration. Each call makes one
// reflect.Call per batch; rows are placed in a reused slice, *T rows without
// reflection.
type reflectHandler struct {
	fn        reflect.Value
	typ       reflect.Type
	kind      reflectKind
	sliceType reflect.Type
	elem      reflect.Type // the slice's element type (*T or T)
	base      reflect.Type // T
}

func (h *reflectHandler) signature() string { return h.typ.String() }

func (h *reflectHandler) bind(fl *flow, layer int) binding {
	var f Flow = fl
	b := &reflectBinding{h: h, fl: fl, layer: layer}
	b.args[1] = reflect.ValueOf(&f).Elem()
	return b
}

type reflectBinding struct {
	h     *reflectHandler
	fl    *flow
	layer int
	args  [3]reflect.Value
	buf   reflect.Value // a slice of sliceType with cap elements
	cap   int
}

func (b *reflectBinding) call(ctx context.Context, in []any) error {
	h := b.h
	b.args[0] = reflect.ValueOf(&ctx).Elem()
	nargs := 3
	switch h.kind {
	case reflectNoRows:
		nargs = 2
	case reflectAny:
		b.args[2] = reflect.ValueOf(in)
	default:
		if !b.buf.IsValid() || b.cap < len(in) {
			b.cap = max(len(in), 2*b.cap, 16)
			b.buf = reflect.MakeSlice(h.sliceType, b.cap, b.cap)
		}
		n := b.fill(in)
		b.args[2] = b.buf.Slice(0, n)
		defer b.clearBuf(n)
	}
	out := h.fn.Call(b.args[:nargs])
	b.args[0], b.args[2] = reflect.Value{}, reflect.Value{}
	if err, _ := out[0].Interface().(error); err != nil {
		return err
	}
	return nil
}

// fill places the convertible rows of in at the front of b.buf.
func (b *reflectBinding) fill(in []any) int {
	h := b.h
	n := 0
	base := b.buf.UnsafePointer()
	for i, row := range in {
		rt := reflect.TypeOf(row)
		if h.kind == reflectPtr && rt == h.elem {
			// The row is a *T: its interface data word is the pointer.
			*(*unsafe.Pointer)(unsafe.Add(base, uintptr(n)*unsafe.Sizeof(uintptr(0)))) = (*[2]unsafe.Pointer)(unsafe.Pointer(&row))[1]
			n++
			continue
		}
		v, err := b.convert(row, rt)
		if err != nil {
			b.fl.reject(b.layer, i, row, err)
			continue
		}
		b.buf.Index(n).Set(v)
		n++
	}
	return n
}

func (b *reflectBinding) convert(row any, rt reflect.Type) (reflect.Value, error) {
	h := b.h
	switch {
	case rt == h.base && h.kind == reflectPtr:
		p := reflect.New(h.base)
		p.Elem().Set(reflect.ValueOf(row))
		return p, nil
	case rt == h.base:
		return reflect.ValueOf(row), nil
	case h.kind == reflectVal && rt == reflect.PointerTo(h.base):
		v := reflect.ValueOf(row)
		if v.IsNil() {
			return reflect.Value{}, errors.New("row is a nil pointer")
		}
		return v.Elem(), nil
	}
	p := reflect.New(h.base)
	if err := b.fl.decode(row, p.Interface()); err != nil {
		return reflect.Value{}, err
	}
	if h.kind == reflectPtr {
		return p, nil
	}
	return p.Elem(), nil
}

// clearBuf drops the references the slice holds, so rows can be collected.
func (b *reflectBinding) clearBuf(n int) {
	if b.h.kind == reflectPtr {
		clear(unsafe.Slice((*unsafe.Pointer)(b.buf.UnsafePointer()), n))
		return
	}
	b.buf.Slice(0, n).Clear()
}

// decodeRow decodes a JSON text or map row into dst (a pointer). Its
// errors name the row type, what dst points to (T, not *T).
func decodeRow(c Codec, row any, dst any) error {
	switch v := row.(type) {
	case string:
		// The codec only reads the bytes; the string stays immutable.
		return wrapDecode(c.Unmarshal(unsafe.Slice(unsafe.StringData(v), len(v)), dst), dst)
	case []byte:
		return wrapDecode(c.Unmarshal(v, dst), dst)
	case json.RawMessage:
		return wrapDecode(c.Unmarshal(v, dst), dst)
	case map[string]any, map[string]string:
		data, err := c.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode map row: %w", err)
		}
		return wrapDecode(c.Unmarshal(data, dst), dst)
	case nil:
		return fmt.Errorf("nil row cannot become %s", rowTypeOf(dst))
	}
	// A row of another type (KisFlow's per-function In and Out structs)
	// travels by its JSON shape, as in KisFlow.
	data, err := c.Marshal(row)
	if err != nil {
		return fmt.Errorf("row of type %T cannot become %s: %w", row, rowTypeOf(dst), err)
	}
	if err := c.Unmarshal(data, dst); err != nil {
		return fmt.Errorf("row of type %T cannot become %s: %w", row, rowTypeOf(dst), err)
	}
	return nil
}

func wrapDecode(err error, dst any) error {
	if err != nil {
		return fmt.Errorf("decode into %s: %w", rowTypeOf(dst), err)
	}
	return nil
}

// rowTypeOf is the type dst, a pointer, points to.
func rowTypeOf(dst any) reflect.Type {
	t := reflect.TypeOf(dst)
	if t.Kind() == reflect.Pointer {
		return t.Elem()
	}
	return t
}
