package config

import (
	"testing"
	"testing/fstest"
)

// A filter check places a problem at the line it names (a param of the
// entry, a function's param) or at the entry, and a function named by two
// flows has its problems reported once.
func TestFilterChecksArePositionedAndReportedOnce(t *testing.T) {
	t.Parallel()
	fsys := fstest.MapFS{
		"flows.yml": {Data: []byte("kistype: flow\nflow_name: a\nflows: [{fname: f}]\n---\nkistype: flow\nflow_name: b\nflows: [{fname: f}]\n" +
			"filters:\n  - name: x\n    params:\n      p: 1\n")},
		"f.yml": {Data: []byte("kistype: func\nfname: f\nfmode: Calculate\noption:\n  default_params:\n    x_q: 2\n  filters:\n    - name: x\n      params: {}\n")},
	}
	s, _, err := load(fsys, ".", "")
	if err != nil {
		t.Fatal(err)
	}
	probs := s.Check(WithFilterCheck(func(u FilterUse) []Problem {
		if u.Func == nil {
			return []Problem{{Pos: u.ParamPos("p"), Msg: "p"}, {Pos: u.ParamPos("absent"), Msg: "absent"}}
		}
		return []Problem{{Pos: u.Pos("option.default_params.x_q"), Msg: "q"}, {Msg: "entry"}}
	}))
	want := map[string]string{
		`flow "b": filter "x": p`:         "flows.yml:11",
		`flow "b": filter "x": absent`:    "flows.yml:9",
		`function "f": filter "x": q`:     "f.yml:6",
		`function "f": filter "x": entry`: "f.yml:8",
	}
	if len(probs) != len(want) {
		t.Fatalf("got %v, want %d problems", probs, len(want))
	}
	for _, p := range probs {
		if want[p.Msg] != p.Pos.String() {
			t.Errorf("%q at %s, want %s", p.Msg, p.Pos, want[p.Msg])
		}
	}
}
