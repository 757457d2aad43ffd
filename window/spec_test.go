package window

import (
	"testing"
	"time"
)

func TestParseAggregate(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		expr string
		want Aggregate
		err  string
	}{
		{"count()", Aggregate{"x", Count, ""}, ""},
		{" sum( amount ) ", Aggregate{"x", Sum, "amount"}, ""},
		{"AVG(amount)", Aggregate{"x", Avg, "amount"}, ""},
		{"max(a.b)", Aggregate{"x", Max, "a.b"}, ""},
		{"min(amount)", Aggregate{"x", Min, "amount"}, ""},
		{"count_distinct(user_id)", Aggregate{"x", CountDistinct, "user_id"}, ""},
		{"summ(amount)", Aggregate{}, `aggregate x: unknown aggregate "summ" (did you mean sum?)`},
		{"cnt()", Aggregate{}, `aggregate x: unknown aggregate "cnt" (did you mean count?)`},
		{"median(amount)", Aggregate{}, `aggregate x: unknown aggregate "median" (want count, sum, avg, max, min, count_distinct)`},
		{"sum()", Aggregate{}, `aggregate x: sum() is missing its field, as in sum(amount)`},
		{"count_distinct( )", Aggregate{}, `aggregate x: count_distinct() is missing its field, as in count_distinct(amount)`},
		{"count(id)", Aggregate{}, `aggregate x: count() counts rows and takes no field (count_distinct(id) counts distinct values)`},
		{"amount", Aggregate{}, `aggregate x: "amount" is not a call such as sum(amount) or count()`},
		{"", Aggregate{}, `aggregate x: "" is not a call such as sum(amount) or count()`},
		{"(amount)", Aggregate{}, `aggregate x: "(amount)" names no function (want count(), sum(), avg(), max(), min(), count_distinct())`},
		{"sum(a, b)", Aggregate{}, `aggregate x: "sum(a, b)": sum takes one field name`},
		{"sum(amount * 2)", Aggregate{}, `aggregate x: "sum(amount * 2)": sum takes one field name`},
	} {
		got, err := ParseAggregate("x", c.expr)
		switch {
		case c.err != "" && (err == nil || err.Error() != c.err):
			t.Errorf("%q: error %v, want %s", c.expr, err, c.err)
		case c.err == "" && err != nil && c.want.Func != "":
			t.Errorf("%q: %v", c.expr, err)
		case c.err == "" && c.want.Func != "" && got != c.want:
			t.Errorf("%q: %+v, want %+v", c.expr, got, c.want)
		}
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	aggs := []Aggregate{{"n", Count, ""}}
	for _, c := range []struct {
		spec Spec
		err  string
	}{
		{Spec{Type: Tumbling, Size: time.Minute, Aggregates: aggs}, ""},
		{Spec{Type: "tumbeling", Size: time.Minute, Aggregates: aggs}, `unknown window type "tumbeling" (did you mean tumbling?)`},
		{Spec{Type: "hopping", Size: time.Minute, Aggregates: aggs}, `unknown window type "hopping" (want tumbling, sliding, session)`},
		{Spec{Type: Tumbling, Aggregates: aggs}, "missing size"},
		{Spec{Type: Tumbling, Size: time.Microsecond, Aggregates: aggs}, "size 1µs must be a positive whole number of milliseconds"},
		{Spec{Type: Sliding, Size: time.Minute, Aggregates: aggs}, "missing slide"},
		{Spec{Type: Sliding, Size: time.Minute, Slide: time.Hour, Aggregates: aggs}, "slide 1h0m0s is larger than size 1m0s"},
		{Spec{Type: Session, Size: time.Minute, Aggregates: aggs}, "missing gap"},
		{Spec{Type: Session, Gap: -time.Minute, Aggregates: aggs}, "gap -1m0s must be a positive whole number of milliseconds"},
		{Spec{Type: Tumbling, Size: time.Minute, Lateness: -1, Aggregates: aggs}, "lateness -1ns must be zero or a positive whole number of milliseconds"},
		{Spec{Type: Tumbling, Size: time.Minute, Late: "dead-letter", Aggregates: aggs}, `unknown late policy "dead-letter" (did you mean dead_letter?)`},
		{Spec{Type: Tumbling, Size: time.Minute, Late: Update, Aggregates: aggs}, "late: update needs a lateness above zero: a closed window is kept for one lateness to take late rows"},
		{Spec{Type: Tumbling, Size: time.Minute}, "no aggregate"},
		{Spec{Type: Tumbling, Size: time.Minute, GroupBy: []string{"n"}, Aggregates: aggs}, `aggregate "n" is also a group_by field`},
		{Spec{Type: Tumbling, Size: time.Minute, GroupBy: []string{"window_end"}, Aggregates: aggs}, `group_by "window_end" is also the window bound`},
		{Spec{Type: Tumbling, Size: time.Minute, Aggregates: []Aggregate{{"s", Sum, ""}}}, "aggregate s: sum() is missing its field, as in sum(amount)"},
	} {
		err := c.spec.Validate()
		if c.err == "" && err != nil || c.err != "" && (err == nil || err.Error() != c.err) {
			t.Errorf("%+v: %v, want %q", c.spec, err, c.err)
		}
	}
}
