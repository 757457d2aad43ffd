package window

import (
	"errors"
	"fmt"
	textdist "github.com/kisflow-go/kisflow/internal/suggest"
	"slices"
	"strings"
	"time"
)

// Type is a kind of window.
type Type string

// The window types.
const (
	Tumbling Type = "tumbling" // fixed size, no overlap
	Sliding  Type = "sliding"  // fixed size, a new window every slide
	Session  Type = "session"  // per group, closed after a gap without rows
)

// Types lists every window type.
var Types = []Type{Tumbling, Sliding, Session}

// Late is the policy for rows that arrive after their window closed.
type Late string

// The policies for late rows (see the package doc).
const (
	Drop       Late = "drop"
	DeadLetter Late = "dead_letter"
	Update     Late = "update"
)

// Lates lists every late policy.
var Lates = []Late{Drop, DeadLetter, Update}

// The names of the window bounds in output rows.
const (
	StartField = "window_start"
	EndField   = "window_end"
)

// ErrLate is wrapped by the error of a late row under the dead_letter policy.
var ErrLate = errors.New("late row: its window already closed")

// ErrTooLate is wrapped by the error of a row that came after its window's
// state was freed, under the update policy.
var ErrTooLate = errors.New("late row: its window closed more than the lateness ago and can no longer be updated")

// ErrAhead is wrapped by the error of a row whose event time is further
// ahead of the clock than Spec.MaxAhead: a mistyped timestamp (micro- for
// milliseconds) that would otherwise move the watermark years on and close
// every window.
var ErrAhead = errors.New("event time too far ahead of the clock")

// DefaultMaxAhead is the bound on how far ahead of the clock an event time
// may be when Spec.MaxAhead is zero.
const DefaultMaxAhead = 24 * time.Hour

// Spec configures an Operator.
type Spec struct {
	Type Type
	// Size is the length of tumbling and sliding windows.
	Size time.Duration
	// Slide is how often a sliding window starts.
	Slide time.Duration
	// Gap closes a session after that long without a row of its group.
	Gap time.Duration
	// TimeField names the event-time field; empty means processing time.
	TimeField string
	// Lateness is how far behind the largest time seen the watermark is.
	Lateness time.Duration
	// MaxAhead bounds event time: a row whose time is more than MaxAhead
	// ahead of Now is rejected with ErrAhead and does not move the
	// watermark. Zero means DefaultMaxAhead; negative means no bound.
	MaxAhead time.Duration
	// Late is the policy for late rows; empty means DeadLetter.
	Late Late
	// GroupBy names the fields that group rows.
	GroupBy []string
	// Aggregates are the output fields, in order.
	Aggregates []Aggregate
	// Now is the clock of processing time; nil means time.Now.
	Now func() time.Time
}

// Validate reports the first problem of the spec.
func (s *Spec) Validate() error {
	switch s.Type {
	case Tumbling, Sliding:
		if err := positive("size", s.Size); err != nil {
			return err
		}
		if s.Type == Sliding {
			if err := positive("slide", s.Slide); err != nil {
				return err
			}
			if s.Slide > s.Size {
				return fmt.Errorf("slide %v is larger than size %v", s.Slide, s.Size)
			}
		}
	case Session:
		if err := positive("gap", s.Gap); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unknown window type %q%s", s.Type, suggest(string(s.Type), Types))
	}
	if s.Lateness < 0 || s.Lateness%time.Millisecond != 0 {
		return fmt.Errorf("lateness %v must be zero or a positive whole number of milliseconds", s.Lateness)
	}
	if s.Late != "" && !slices.Contains(Lates, s.Late) {
		return fmt.Errorf("unknown late policy %q%s", s.Late, suggest(string(s.Late), Lates))
	}
	if s.Late == Update && s.Lateness == 0 {
		return errors.New("late: update needs a lateness above zero: a closed window is kept for one lateness to take late rows")
	}
	if len(s.Aggregates) == 0 {
		return errors.New("no aggregate")
	}
	seen := map[string]string{StartField: "the window bound", EndField: "the window bound"}
	for _, g := range s.GroupBy {
		if g == "" {
			return errors.New("group_by: empty field name")
		}
		if what, dup := seen[g]; dup {
			return fmt.Errorf("group_by %q is also %s", g, what)
		}
		seen[g] = "a group_by field"
	}
	for _, a := range s.Aggregates {
		if a.Name == "" {
			return errors.New("aggregate with no name")
		}
		if what, dup := seen[a.Name]; dup {
			return fmt.Errorf("aggregate %q is also %s", a.Name, what)
		}
		seen[a.Name] = "an aggregate"
		if a.Func.takesField() != (a.Field != "") {
			_, err := ParseAggregate(a.Name, string(a.Func)+"("+a.Field+")")
			return err
		}
	}
	return nil
}

func positive(name string, d time.Duration) error {
	switch {
	case d == 0:
		return fmt.Errorf("missing %s", name)
	case d < time.Millisecond || d%time.Millisecond != 0:
		return fmt.Errorf("%s %v must be a positive whole number of milliseconds", name, d)
	}
	return nil
}

// Func is an aggregate function.
type Func string

// The aggregate functions.
const (
	Count         Func = "count"
	Sum           Func = "sum"
	Avg           Func = "avg"
	Max           Func = "max"
	Min           Func = "min"
	CountDistinct Func = "count_distinct"
)

// Funcs lists every aggregate function.
var Funcs = []Func{Count, Sum, Avg, Max, Min, CountDistinct}

func (f Func) takesField() bool { return f != Count }

// Aggregate is one output field: Name = Func(Field).
type Aggregate struct {
	Name  string
	Func  Func
	Field string // "" for count
}

// String returns the aggregate's expression, as ParseAggregate reads it.
func (a Aggregate) String() string { return string(a.Func) + "(" + a.Field + ")" }

// ParseAggregate reads an aggregate expression such as "sum(amount)" or
// "count()" for the output field name.
func ParseAggregate(name, expr string) (Aggregate, error) {
	a := Aggregate{Name: name}
	src := strings.TrimSpace(expr)
	open := strings.IndexByte(src, '(')
	if open < 0 || !strings.HasSuffix(src, ")") {
		return a, fmt.Errorf("aggregate %s: %q is not a call such as sum(amount) or count()", name, expr)
	}
	fn := strings.TrimSpace(src[:open])
	field := strings.TrimSpace(src[open+1 : len(src)-1])
	a.Func, a.Field = Func(strings.ToLower(fn)), field
	switch {
	case fn == "":
		return a, fmt.Errorf("aggregate %s: %q names no function (want %s)", name, expr, funcList())
	case !slices.Contains(Funcs, a.Func):
		return a, fmt.Errorf("aggregate %s: unknown aggregate %q%s", name, fn, suggest(fn, Funcs))
	case strings.ContainsAny(field, "(),*/+ \t\"'"):
		return a, fmt.Errorf("aggregate %s: %q: %s takes one field name", name, expr, a.Func)
	case a.Func == Count && field != "":
		return a, fmt.Errorf("aggregate %s: count() counts rows and takes no field (count_distinct(%s) counts distinct values)", name, field)
	case a.Func.takesField() && field == "":
		return a, fmt.Errorf("aggregate %s: %s() is missing its field, as in %s(amount)", name, a.Func, a.Func)
	}
	return a, nil
}

func funcList() string {
	s := make([]string, len(Funcs))
	for i, f := range Funcs {
		s[i] = string(f) + "()"
	}
	return strings.Join(s, ", ")
}

// suggest names the element of names closest to s, or lists them.
func suggest[T ~string](s string, names []T) string {
	best, bestD := "", 3
	for _, n := range names {
		if d := distance(strings.ToLower(s), string(n)); d < bestD {
			best, bestD = string(n), d
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %s?)", best)
	}
	all := make([]string, len(names))
	for i, n := range names {
		all[i] = string(n)
	}
	return " (want " + strings.Join(all, ", ") + ")"
}

func distance(a, b string) int { return textdist.Distance(a, b) }
