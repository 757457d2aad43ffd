package kisflow

import (
	"context"
	"fmt"
	"maps"
	"math"
	"unsafe"

	"github.com/expr-lang/expr/vm"

	"github.com/kisflow-go/kisflow/internal/flatjson"
	"github.com/kisflow-go/kisflow/internal/jsonl"

	"github.com/kisflow-go/kisflow/config"
)

// exprHandler is the body of a function written in YAML: a Verify filter or
// a Calculate calc. Its expressions are compiled once, when the flow is
// compiled; rows are maps of field to value (JSON text is decoded into one).
type exprHandler struct {
	name   string
	filter *vm.Program
	calc   []*vm.Program
	fields []string
	keep   []string
}

func newExprHandler(fc *config.Func) (*exprHandler, error) {
	h := &exprHandler{name: fc.FName, keep: fc.Keep}
	var err error
	if fc.Filter != "" {
		if h.filter, err = config.CompileFilter(fc.Filter); err != nil {
			return nil, fmt.Errorf("function %q: %w", fc.FName, err)
		}
	}
	for _, a := range fc.Calc {
		p, err := config.CompileCalc(a)
		if err != nil {
			return nil, fmt.Errorf("function %q: %w", fc.FName, err)
		}
		h.calc = append(h.calc, p)
		h.fields = append(h.fields, a.Field)
	}
	return h, nil
}

func (h *exprHandler) signature() string { return "config expression" }

func (h *exprHandler) bind(fl *flow, layer int) binding {
	return &exprBinding{h: h, fl: fl, layer: layer, rows: rowReader{fl: fl}}
}

type exprBinding struct {
	h     *exprHandler
	fl    *flow
	layer int
	vm    vm.VM
	rows  rowReader
	text  []byte // the chunk the rows written as JSON text are in (flow.textRows)
}

func (b *exprBinding) call(ctx context.Context, in []any) error {
	h := b.h
	for i, row := range in {
		m, err := b.rows.fields(row, len(h.calc) > 0)
		if err != nil {
			b.fl.reject(b.layer, i, row, err)
			continue
		}
		if h.filter != nil {
			ok, err := b.vm.Run(h.filter, m)
			if err != nil {
				b.fl.reject(b.layer, i, row, fmt.Errorf("filter: %w", err))
				continue
			}
			if ok != true {
				continue
			}
		}
		if len(h.calc) == 0 && b.fl.textRows {
			b.fl.run.Commit(row) // it passed the filter as it came
			continue
		}
		if len(h.calc) > 0 {
			added := true // every calc field is new to the row
			for j, p := range h.calc {
				v, err := b.vm.Run(p, m)
				if err != nil {
					b.fl.reject(b.layer, i, row, fmt.Errorf("calc %s: %w", h.fields[j], err))
					m = nil
					break
				}
				if _, had := m[h.fields[j]]; had {
					added = false
				}
				m[h.fields[j]] = v
			}
			if m == nil {
				continue
			}
			if added && len(h.keep) == 0 && b.fl.textRows {
				if text, out, ok := appendFields(b.text, row, m, h.fields); ok {
					b.text = text
					b.fl.run.Commit(out)
					continue
				}
			}
			if len(h.keep) > 0 {
				kept := make(map[string]any, len(h.keep))
				for _, k := range h.keep {
					if v, ok := m[k]; ok {
						kept[k] = v
					}
				}
				m = kept
			}
		}
		b.fl.run.Commit(m)
	}
	return nil
}

// appendFields writes out, row (a JSON object as text) with the fields
// added at its end, their values from m: the calc's output row written
// without encoding the fields the row had. It writes out at the end of
// text, the chunk the rows of earlier calls are in, or in a new chunk when
// text has not the room, and returns the chunk. ok == false when row is no
// JSON text or a value is not flat (the caller commits m).
func appendFields(text []byte, row any, m map[string]any, fields []string) (_, out []byte, ok bool) {
	var raw []byte
	switch v := row.(type) {
	case []byte:
		raw = v
	case string:
		raw = unsafe.Slice(unsafe.StringData(v), len(v))
	default:
		return text, nil, false
	}
	end := len(raw) - 1
	for end >= 0 && isSpace(raw[end]) {
		end--
	}
	if end < 1 || raw[end] != '}' {
		return text, nil, false
	}
	last := end - 1
	for last >= 0 && isSpace(raw[last]) {
		last--
	}
	if need := end + 24*len(fields); cap(text)-len(text) < need {
		text = make([]byte, 0, max(need, 64<<10))
	}
	start := len(text)
	out = append(text, raw[:end]...)
	for j, k := range fields {
		if j > 0 || raw[last] != '{' {
			out = append(out, ',')
		}
		if out, ok = jsonl.AppendField(out, k, m[k]); !ok {
			return text, nil, false
		}
	}
	out = append(out, '}')
	// A long value may have moved out to a larger array: the next row
	// goes on there.
	return out, out[start:len(out):len(out)], true
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// rowReader reads rows as fields, for the functions written in YAML. It
// keeps a decoder's scratch state: one per flow instance.
type rowReader struct {
	fl   *flow
	flat flatjson.Decoder
}

// fields returns the row as a map of its fields: JSON text is decoded into
// a new map; a map row is copied when the caller will change it (clone), so
// the previous layer's row stays as it was.
func (b *rowReader) fields(row any, clone bool) (map[string]any, error) {
	switch v := row.(type) {
	case map[string]any:
		if clone {
			return maps.Clone(v), nil
		}
		return v, nil
	}
	switch v := row.(type) {
	case string:
		if m, ok := b.flat.Decode(unsafe.Slice(unsafe.StringData(v), len(v))); ok {
			return m, nil
		}
	case []byte:
		if m, ok := b.flat.Decode(v); ok {
			return m, nil
		}
	}
	m := make(map[string]any, 8)
	switch row.(type) {
	case string, []byte, map[string]string:
		if err := b.fl.decode(row, &m); err != nil {
			return nil, err
		}
		integers(m)
		return m, nil
	}
	// A struct or other Go value: through the codec, as JSON.
	data, err := b.fl.codec.Marshal(row)
	if err != nil {
		return nil, fmt.Errorf("row of type %T cannot be read as fields: %w", row, err)
	}
	m = make(map[string]any, 8)
	if err := b.fl.codec.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("row of type %T cannot be read as fields: %w", row, err)
	}
	integers(m)
	return m, nil
}

// integers turns JSON numbers without a fraction (decoded as float64) into
// int64, so ids stay integers in expressions and sinks.
func integers(m map[string]any) {
	for k, v := range m {
		if f, ok := v.(float64); ok && f == math.Trunc(f) && math.Abs(f) < 1<<53 {
			m[k] = int64(f)
		}
	}
}
