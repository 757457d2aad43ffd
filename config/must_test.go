package config

import (
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

// Lint checks the fields that filter, calc and keep read against
// source.must and the fields earlier calcs made, and names unknown
// operators, each at the line of the YAML file where it is.
func TestLintFieldsAndOperators(t *testing.T) {
	t.Parallel()
	const flow = "kistype: flow\nstatus: 1\nflow_name: F\nflows:\n  - fname: A\n  - fname: B\n"
	tests := []struct {
		name  string
		funcs string // a.yml; flow.yml runs A then B
		want  []string
	}{
		{"a misspelt field in a filter",
			"kistype: func\nfname: A\nfmode: Verify\nsource:\n  must: [status, qty]\nfilter: staus == \"paid\" && qty > 0\n" + goB,
			[]string{`a.yml:6: function "A": filter: unknown field "staus" (did you mean status?); rows in flow "F" carry only qty, status (source.must and earlier calcs)`}},
		{"the line inside a literal block",
			"kistype: func\nfname: A\nfmode: Verify\nsource:\n  must: [status, qty]\nfilter: |\n  status == \"paid\"\n  && qyt > 0\n" + goB,
			[]string{`a.yml:8: function "A": filter: unknown field "qyt" (did you mean qty?); rows in flow "F" carry only qty, status (source.must and earlier calcs)`}},
		{"calc reads earlier calcs, not later ones",
			"kistype: func\nfname: A\nfmode: Calculate\nsource:\n  must: [qty, price]\ncalc:\n  total: qty * price\n  taxed: total * 1.2 + tip\n  tip: 1\n" + goB,
			[]string{`a.yml:8: function "A": calc taxed: unknown field "tip"; rows in flow "F" carry only price, qty, total (source.must and earlier calcs)`}},
		{"a later function reads what a calc made, not what keep dropped",
			"kistype: func\nfname: A\nfmode: Calculate\nsource:\n  must: [id, qty, price]\ncalc:\n  total: qty * price\nkeep: [id, total]\n" +
				"---\nkistype: func\nfname: B\nfmode: Verify\nfilter: total > 10 && price > 1\n",
			[]string{`a.yml:13: function "B": filter: unknown field "price"; rows in flow "F" carry only id, total (source.must and earlier calcs)`}},
		{"keep naming an unknown field is a warning",
			"kistype: func\nfname: A\nfmode: Calculate\nsource:\n  must: [id, qty]\ncalc:\n  twice: qty * 2\nkeep: [id, twcie]\n" + goB,
			[]string{`a.yml:8: warning: function "A": keep: unknown field "twcie" (did you mean twice?); rows in flow "F" carry only id, qty, twice (source.must and earlier calcs)`}},
		{"without must nothing is known",
			"kistype: func\nfname: A\nfmode: Verify\nfilter: staus == \"paid\"\n" + goB, nil},
		{"after a Go function nothing is known until a must",
			"kistype: func\nfname: A\nfmode: Calculate\nsource:\n  must: [id]\n" +
				"---\nkistype: func\nfname: B\nfmode: Verify\nfilter: anything > 1\n", nil},
		{"a later function's must is what its input carries",
			"kistype: func\nfname: A\nfmode: Calculate\n" +
				"---\nkistype: func\nfname: B\nfmode: Verify\nsource:\n  must: [user_id]\nfilter: usr_id > 1\n",
			[]string{`a.yml:10: function "B": filter: unknown field "usr_id" (did you mean user_id?); rows in flow "F" carry only user_id (source.must and earlier calcs)`}},
		{"nested fields, let, $env, closures and builtins are not fields",
			"kistype: func\nfname: A\nfmode: Verify\nsource:\n  must: [customer.id, tags]\n" +
				"filter: let n = len(tags); customer.id > 0 && n > 0 && all(tags, {# != \"\"}) && $env.coupon == nil && upper(customer.name) != \"\"\n" + goB, nil},
		{"a nested field's root is checked",
			"kistype: func\nfname: A\nfmode: Verify\nsource:\n  must: [customer.id]\nfilter: custmer.id > 0\n" + goB,
			[]string{`a.yml:6: function "A": filter: unknown field "custmer" (did you mean customer?); rows in flow "F" carry only customer (source.must and earlier calcs)`}},
		{"a function in no flow is checked against its own must",
			"kistype: func\nfname: A\nfmode: Verify\n" + goB + "---\nkistype: func\nfname: Lone\nfmode: Verify\nsource:\n  must: [qty]\nfilter: price > 1\n",
			[]string{`a.yml:14: function "Lone": filter: unknown field "price"; rows carry only qty (source.must and earlier calcs)`}},
		{"an assignment instead of a comparison",
			"kistype: func\nfname: A\nfmode: Verify\nfilter: status = \"paid\"\n" + goB,
			[]string{`a.yml:4: function "A": filter "status = \"paid\"": unknown operator "=" (did you mean ==?) (1:8)`}},
		{"operators of other languages",
			"kistype: func\nfname: A\nfmode: Verify\nfilter: a === 1\n---\nkistype: func\nfname: B\nfmode: Calculate\ncalc:\n  x: a <> b\n  y: a & b\n  z: a ~ b\n",
			[]string{
				`a.yml:4: function "A": filter "a === 1": unknown operator "===" (did you mean ==?) (1:3)`,
				`a.yml:10: function "B": calc x: "a <> b": unknown operator "<>" (did you mean !=?) (1:3)`,
				`a.yml:11: function "B": calc y: "a & b": unknown operator "&" (did you mean &&?) (1:3)`,
				`a.yml:12: function "B": calc z: "a ~ b": unknown operator "~" (did you mean matches?) (1:3)`,
			}},
		{"a syntax error inside a literal block",
			"kistype: func\nfname: A\nfmode: Verify\nfilter: |\n  a > 1\n  && b <<< 2\n" + goB,
			[]string{`a.yml:6: function "A": filter "a > 1\n&& b <<< 2\n": unknown operator "<<<" (2:6)`}},
		{"a misplaced known operator stays a syntax error",
			"kistype: func\nfname: A\nfmode: Verify\nfilter: a ! b\n" + goB,
			[]string{`a.yml:4: function "A": filter "a ! b": unexpected token Operator("!") (1:3)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			probs, err := lintFS(t, fstest.MapFS{"a.yml": {Data: []byte(tt.funcs)}, "flow.yml": {Data: []byte(flow)}})
			if err != nil {
				t.Fatal(err)
			}
			sortProblems(probs)
			var got []string
			for _, p := range probs {
				got = append(got, p.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

// goB is function B of the flow, written in Go (neither filter nor calc).
const goB = "---\nkistype: func\nfname: B\nfmode: Expand\n"

func TestMustFields(t *testing.T) {
	t.Parallel()
	got := MustFields([]string{"a", " ", "b.c", " d "})
	want := [][]string{{"a"}, {"b", "c"}, {"d"}}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("got %q, want %q", got, want)
	}
}
