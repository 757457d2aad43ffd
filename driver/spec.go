package driver

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kisflow-go/kisflow/config"
)

// Kind is the type of a param's value, which fixes its grammar.
type Kind string

// The kinds of params. One grammar each, for every connector.
const (
	KindString   Kind = "string"
	KindInt      Kind = "int"
	KindNumber   Kind = "number"   // a decimal number: 2.5
	KindBool     Kind = "bool"     // true or false
	KindDuration Kind = "duration" // a Go duration with its unit: 500ms, 2s, 1h30m
	KindSize     Kind = "size"     // bytes: 512, 64KiB, 10MiB, 1GB
	KindList     Kind = "list"     // comma-separated strings
	KindEnum     Kind = "enum"     // one of the listed words
)

// Param is one declared param of a connector type.
type Param struct {
	Name     string
	Kind     Kind
	Default  string // as written in YAML; "" when the param has none
	Doc      string
	Required bool
	Enum     []string // the words a KindEnum param takes
	Min      string   // the lowest value of an int, duration or size, as written in YAML
	Max      string   // the highest one used: a larger value is read as it, with a lint warning
	Example  string
	Secret   bool     // a credential: masked by echo and in errors
	Aliases  []string // former names still read, with a lint warning
	// Bare is the unit a bare whole number of a duration param is read
	// in ("ms"), with a lint warning: a former form kept so that old
	// configs still load. "" refuses bare numbers, as the grammar does.
	Bare string

	field []int
	min   any
	max   any
}

// Spec declares a connector type: what it is and its params. Build it with
// NewSpec or MustSpec from a struct whose fields carry the params' tags:
//
//	param:"name"      the param's name in YAML (fields without it are not params)
//	default:"value"   the value when the param is absent or empty
//	doc:"text"        what it does (one sentence, for lint, list and the README)
//	required:"true"   it must be given
//	enum:"a|b|c"      the words a string param takes
//	min:"value"       the lowest int, duration or size
//	max:"value"       the highest int, duration or size used: a larger one is capped, with a warning
//	example:"value"   an example value
//	secret:"true"     a credential
//	alias:"old|older" former names, still read with a lint warning
//	bare:"ms"         a duration that also reads a bare whole number in
//	                  this unit, with a lint warning (a former form)
//
// A field's Go type gives its kind: string (KindEnum with enum), int, bool,
// float64, time.Duration, Size, or []string (KindList). The fields of an
// embedded struct are params too, so types sharing params share a struct.
type Spec struct {
	// Type is the connector type (`type:` in YAML), or the filter's name
	// for a filter's spec (kisflow.Registry.RegisterFilterSpec).
	Type string
	// Summary says in one line what the type connects to.
	Summary string
	// Addrs and Key say what the connector's addrs and key mean for this
	// type ("" when it does not use them).
	Addrs, Key string
	// Params are the declared params, in the struct's order.
	Params []Param
	// Unidentified says the type's source messages carry neither an ID
	// nor a position, so a redelivery cannot be recognised: exactly-once
	// delivery from it is at-least-once, and lint warns of it.
	Unidentified bool
	// Remote says the type's functions run in other processes: a function
	// naming a connector of this type has no local body, whatever its
	// fmode, and the driver is an Invoker.
	Remote bool
	// BatchSize, when not 0, is the stream.batch_size of a flow reading a
	// connector of this type as its source and setting none (otherwise
	// the runtime's 1000): a change-data-capture source, whose every
	// batch is a transaction of the sink, takes bigger ones.
	BatchSize int

	typ reflect.Type
}

// ChangeBatchSize is the BatchSize of the change-data-capture sources
// (postgres_cdc, mysql_cdc). Each batch is a transaction of the sink
// (with delivery: exactly-once, the position's too) whose commit waits
// for the disk, and a change stream is every change of its tables: 5000
// changes a commit instead of the runtime's 1000 let a SQL sink keep up
// with the stream (see the README, PostgreSQL CDC, Speed). A batch is
// still cut when the stream pauses (stream.linger), so a quiet stream's
// changes wait no longer.
const ChangeBatchSize = 5000

// MustSpec is NewSpec that panics on a malformed declaration: a
// programming error of the connector package, found by its first test.
func MustSpec[P any](typ, summary string) *Spec {
	s, err := NewSpec[P](typ, summary)
	if err != nil {
		panic(err)
	}
	return s
}

// NewSpec builds the spec of connector type typ from the params struct P.
func NewSpec[P any](typ, summary string) (*Spec, error) {
	t := reflect.TypeFor[P]()
	if t.Kind() != reflect.Struct {
		return nil, fmt.Errorf("spec %s: params type %v is not a struct", typ, t)
	}
	s := &Spec{Type: typ, Summary: summary, typ: t}
	for _, f := range reflect.VisibleFields(t) {
		if f.Anonymous {
			continue // its fields come next
		}
		name := f.Tag.Get("param")
		if name == "" {
			continue
		}
		p := Param{Name: name, Default: f.Tag.Get("default"), Doc: f.Tag.Get("doc"), Example: f.Tag.Get("example"),
			Required: f.Tag.Get("required") == "true", Secret: f.Tag.Get("secret") == "true", Min: f.Tag.Get("min"), Max: f.Tag.Get("max"), field: f.Index}
		if a := f.Tag.Get("alias"); a != "" {
			p.Aliases = strings.Split(a, "|")
		}
		p.Bare = f.Tag.Get("bare")
		switch {
		case f.Type == reflect.TypeFor[time.Duration]():
			p.Kind = KindDuration
		case f.Type == reflect.TypeFor[Size]():
			p.Kind = KindSize
		case f.Type.Kind() == reflect.String:
			p.Kind = KindString
			if e := f.Tag.Get("enum"); e != "" {
				p.Kind, p.Enum = KindEnum, strings.Split(e, "|")
			}
		case f.Type.Kind() == reflect.Int:
			p.Kind = KindInt
		case f.Type.Kind() == reflect.Float64:
			p.Kind = KindNumber
		case f.Type.Kind() == reflect.Bool:
			p.Kind = KindBool
		case f.Type == reflect.TypeFor[[]string]():
			p.Kind = KindList
		default:
			return nil, fmt.Errorf("spec %s: param %s: unsupported Go type %v", typ, name, f.Type)
		}
		if p.Bare != "" {
			if _, err := time.ParseDuration("1" + p.Bare); err != nil || p.Kind != KindDuration {
				return nil, fmt.Errorf("spec %s: param %s: bare %q is not a unit of a duration param", typ, name, p.Bare)
			}
		}
		if p.Min != "" {
			v, err := parse(p.Kind, p.Min, nil)
			if err != nil {
				return nil, fmt.Errorf("spec %s: param %s: min: %v", typ, name, err)
			}
			p.min = v
		}
		if p.Max != "" {
			v, err := parse(p.Kind, p.Max, nil)
			if err != nil {
				return nil, fmt.Errorf("spec %s: param %s: max: %v", typ, name, err)
			}
			p.max = v
		}
		if p.Default != "" {
			if _, err := p.value(p.Default); err != nil {
				return nil, fmt.Errorf("spec %s: param %s: default: %v", typ, name, err)
			}
		}
		if p.Doc == "" {
			return nil, fmt.Errorf("spec %s: param %s has no doc", typ, name)
		}
		s.Params = append(s.Params, p)
	}
	return s, nil
}

// Param returns the declared param called name (or one of its aliases).
func (s *Spec) Param(name string) (*Param, bool) {
	for i := range s.Params {
		if s.Params[i].Name == name || slices.Contains(s.Params[i].Aliases, name) {
			return &s.Params[i], true
		}
	}
	return nil, false
}

// ParamError is a problem with one param of a connector's config.
type ParamError struct {
	Param   string // the name as written in YAML
	Msg     string
	Warning bool // the config still works (a former name)
	Unknown bool // the spec declares no such param
}

// Error reads "param NAME: MSG". After a secret-like name (password,
// sasl_password, token) the colon would make every redaction of the
// message hide MSG's first word as the secret's value, so that name is
// followed by " (a secret)" instead.
func (e *ParamError) Error() string {
	if probe := "param " + e.Param + ": x"; config.Redact(probe) != probe {
		return "param " + e.Param + " (a secret): " + e.Msg
	}
	return "param " + e.Param + ": " + e.Msg
}

// Errors lists the problems of a connector's params, in the order of the
// YAML keys' names.
type Errors []*ParamError

func (e Errors) Error() string {
	msgs := make([]string, len(e))
	for i, pe := range e {
		msgs[i] = pe.Error()
	}
	return strings.Join(msgs, "; ")
}

// Check reports every problem of params: unknown names (with the declared
// name closest to each), values that do not parse or are out of range,
// missing required params, and former names (warnings).
func (s *Spec) Check(params map[string]string) Errors {
	_, errs := s.decode(params)
	return errs
}

// Decode checks cfg's params against the spec and fills dst, a pointer to
// the spec's params struct, with their values (defaults for the absent
// ones). Its error lists every problem, prefixed with the connector's
// name; warnings alone are no error.
func (s *Spec) Decode(cfg *config.Conn, dst any) error {
	if err := s.DecodeParams(cfg.Params, dst); err != nil {
		return fmt.Errorf("%s connector %q: %w", s.Type, cfg.CName, err)
	}
	return nil
}

// DecodeParams is Decode of a bare map of params, for components that are
// no connector (filters): it fills dst, a pointer to the spec's params
// struct, with the values of params. A param that is absent or empty
// takes its default; one without a default leaves dst's field as it was,
// so a caller may preset defaults that are known only at run time. The
// error is the Errors of every problem (warnings alone are no error),
// unprefixed.
func (s *Spec) DecodeParams(params map[string]string, dst any) error {
	v := reflect.ValueOf(dst)
	if v.Kind() != reflect.Pointer || v.Elem().Type() != s.typ {
		return fmt.Errorf("%s: decode wants a *%v, got %T", s.Type, s.typ, dst)
	}
	vals, errs := s.decode(params)
	if errs = slices.DeleteFunc(errs, func(e *ParamError) bool { return e.Warning }); len(errs) > 0 {
		return errs
	}
	for i, p := range s.Params {
		if vals[i] != nil {
			f := v.Elem().FieldByIndex(p.field)
			f.Set(reflect.ValueOf(vals[i]).Convert(f.Type()))
		}
	}
	return nil
}

func (s *Spec) decode(params map[string]string) ([]any, Errors) {
	var errs Errors
	given := make([]string, len(s.Params))
	from := make([]string, len(s.Params))
	for _, k := range sortedKeys(params) {
		p, ok := s.Param(k)
		if !ok {
			errs = append(errs, &ParamError{Param: k, Unknown: true, Msg: "unknown param" + s.suggest(k)})
			continue
		}
		i := slices.IndexFunc(s.Params, func(q Param) bool { return q.Name == p.Name })
		if k != p.Name {
			errs = append(errs, &ParamError{Param: k, Warning: true, Msg: fmt.Sprintf("%s is now called %s", k, p.Name)})
			if _, both := params[p.Name]; both {
				continue // the new name wins
			}
		}
		given[i], from[i] = params[k], k
	}
	vals := make([]any, len(s.Params))
	for i := range s.Params {
		p := &s.Params[i]
		raw, name := given[i], from[i]
		if strings.TrimSpace(raw) == "" {
			raw, name = p.Default, p.Name
			if raw == "" {
				if p.Required {
					errs = append(errs, &ParamError{Param: p.Name, Msg: "required: " + p.Doc})
				}
				continue
			}
		}
		if bare, ok := p.bare(raw); ok {
			errs = append(errs, &ParamError{Param: name, Warning: true, Msg: fmt.Sprintf("%s read as %s; write %s", strings.TrimSpace(raw), bare, bare)})
			raw = bare
		}
		v, err := p.value(raw)
		if err != nil {
			errs = append(errs, &ParamError{Param: name, Msg: err.Error()})
			continue
		}
		if p.max != nil && less(p.max, v) {
			errs = append(errs, &ParamError{Param: name, Warning: true, Msg: fmt.Sprintf("%s is above the maximum %s: %s is used", strings.TrimSpace(raw), p.Max, p.Max)})
			v = p.max
		}
		vals[i] = v
	}
	return vals, errs
}

// value parses raw by the param's kind and checks its range or words.
func (p *Param) value(raw string) (any, error) {
	v, err := parse(p.Kind, raw, p.Enum)
	if err != nil {
		return nil, err
	}
	if p.min != nil && less(v, p.min) {
		return nil, fmt.Errorf("%q is below the minimum %s", raw, p.Min)
	}
	return v, nil
}

// bare returns raw with the param's Bare unit when raw is a bare whole
// number other than 0 (which needs no unit) and the param reads such.
func (p *Param) bare(raw string) (string, bool) {
	t := strings.TrimSpace(raw)
	if p.Bare == "" {
		return "", false
	}
	if n, err := strconv.ParseInt(t, 10, 64); err != nil || n == 0 {
		return "", false
	}
	return t + p.Bare, true
}

func less(a, b any) bool {
	switch a := a.(type) {
	case int:
		return a < b.(int)
	case float64:
		return a < b.(float64)
	case time.Duration:
		return a < b.(time.Duration)
	case Size:
		return a < b.(Size)
	}
	return false
}

// suggest names the declared param closest to an unknown name, or lists
// the declared ones.
func (s *Spec) suggest(name string) string {
	var names []string
	for _, p := range s.Params {
		names = append(names, p.Name)
	}
	if hint := config.SuggestName(name, names); hint != "" {
		return hint
	}
	if len(names) == 0 {
		return fmt.Sprintf(" (%s takes no params)", s.Type)
	}
	return fmt.Sprintf(" (%s takes %s)", s.Type, strings.Join(names, ", "))
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
