package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/window"
)

// TestWindowBlock reads the window block of the issue and converts it.
func TestWindowBlock(t *testing.T) {
	t.Parallel()
	s, err := Import("testdata/window/ok")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := s.Funcs["RevenuePerUser"].Window.Spec()
	if err != nil {
		t.Fatal(err)
	}
	want := window.Spec{Type: window.Tumbling, Size: time.Minute, TimeField: "ts", Lateness: 30 * time.Second,
		Late: window.DeadLetter, GroupBy: []string{"user_id"}, Aggregates: []window.Aggregate{
			{Name: "orders", Func: window.Count}, {Name: "revenue", Func: window.Sum, Field: "amount"},
			{Name: "avg_amount", Func: window.Avg, Field: "amount"}, {Name: "max_amount", Func: window.Max, Field: "amount"},
			{Name: "min_amount", Func: window.Min, Field: "amount"}, {Name: "buyers", Func: window.CountDistinct, Field: "user_id"}}}
	if !reflect.DeepEqual(spec, want) {
		t.Errorf("spec\n got %+v\nwant %+v", spec, want)
	}
	if _, err := window.New(spec); err != nil {
		t.Errorf("the spec does not make an operator: %v", err)
	}
	spec, err = s.Funcs["Trending"].Window.Spec()
	if err != nil || spec.Slide != 10*time.Second || spec.Size != time.Hour || spec.Late != window.Update {
		t.Errorf("sliding: %+v %v", spec, err)
	}
	bad := &Window{Type: "sliding", Size: "1m", Slide: "2m", Aggregate: Aggregates{{"n", "count()"}}}
	if _, err := bad.Spec(); err == nil || err.Error() != "window.slide: slide 2m is larger than size 1m" {
		t.Errorf("Spec of a bad block: %v", err)
	}
}

// TestWindowExportRoundTrip: a function with a window exports and imports
// back equal, its aggregates in order.
func TestWindowExportRoundTrip(t *testing.T) {
	t.Parallel()
	orig, err := Import("testdata/window/ok")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := orig.ExportFlow("Revenue", dir); err != nil {
		t.Fatal(err)
	}
	back, err := Import(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !orig.Equal(back) {
		t.Fatalf("round trip changed the set:\n%+v\n%+v", orig.Funcs["RevenuePerUser"].Window, back.Funcs["RevenuePerUser"].Window)
	}
	data, err := Marshal(KindFunc, orig.Funcs["RevenuePerUser"])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "  aggregate:\n    orders: count()\n    revenue: sum(amount)\n") {
		t.Errorf("exported aggregates:\n%s", data)
	}
	plain, _ := Marshal(KindFunc, NewFunc("F", Calculate))
	if strings.Contains(string(plain), "window") {
		t.Errorf("a function without a window exports one:\n%s", plain)
	}
}

// TestWindowLint: each problem of a window block is an error (or a
// warning) at its file and line.
func TestWindowLint(t *testing.T) {
	t.Parallel()
	probs, err := Lint("testdata/window/bad")
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join("testdata", "window", "bad", "windows.yml")
	want := []string{
		`:4: function "NoSize": a tumbling window needs a size`,
		`:6: warning: function "NoSize": slide is not used by tumbling windows`,
		`:14: function "BadType": unknown type "tumbeling" (did you mean tumbling?)`,
		`:25: function "Sliding": slide 5m is larger than size 1m`,
		`:32: function "SlideMissing": a sliding window needs a slide (how often a window starts)`,
		`:41: function "NoGap": a session window needs a gap`,
		`:43: warning: function "NoGap": size is not used by session windows`,
		`:52: function "Durations": size: bad duration "60" (want a number and a unit, such as 1m, 30s or 1h30m)`,
		`:53: function "Durations": lateness: -5s must be above zero`,
		`:63: function "Aggregates": group_by "window_start" is also a window bound`,
		`:65: function "Aggregates": aggregate revenue: unknown aggregate "summ" (did you mean sum?)`,
		`:66: function "Aggregates": aggregate top: max() is missing its field, as in max(amount)`,
		`:67: function "Aggregates": aggregate "user_id" is also a group_by field`,
		`:75: function "LatePolicy": unknown late policy "dead-letter" (did you mean dead_letter?)`,
		`:76: unknown field "window.latenes" (did you mean "lateness"?)`,
		`:86: function "UpdateNoLateness": late: update needs a lateness above zero (a closed window is kept one lateness longer for late rows)`,
		`:93: function "Empty": window needs fmode Calculate, not Verify`,
		`:93: function "Empty": no aggregate (aggregate: {field: count()})`,
		`:103: function "NoType": a window cannot share its function with a filter or a calc; put them in a function of their own`,
		`:103: function "NoType": missing type (want tumbling, sliding or session)`,
	}
	var got []string
	for _, p := range probs {
		got = append(got, strings.TrimPrefix(p.String(), f))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("lint:\n%s\n\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if _, err := Import("testdata/window/bad"); err == nil {
		t.Error("Import of bad windows: no error")
	}
}

// TestWindowScalarGroupBy: a scalar group_by is a one-field list; a
// mapping is an error at its line, and lint still reports the function's
// other problems (and no unknown function in the flow).
func TestWindowScalarGroupBy(t *testing.T) {
	t.Parallel()
	write := func(groupBy, extra string) string {
		dir := t.TempDir()
		files := map[string]string{
			"funcs.yml": "kistype: func\nfname: W\nfmode: Calculate\nwindow:\n  type: tumbling\n  size: 1m\n" +
				"  group_by: " + groupBy + "\n  aggregate:\n    n: count()\n" + extra,
			"flow.yml": "kistype: flow\nstatus: 1\nflow_name: F\nflows:\n  - fname: W\n",
		}
		for name, body := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	s, err := Import(write("user_id", ""))
	if err != nil {
		t.Fatal(err)
	}
	spec, err := s.Funcs["W"].Window.Spec()
	if err != nil || !reflect.DeepEqual(spec.GroupBy, []string{"user_id"}) {
		t.Errorf("scalar group_by: %v %v", spec.GroupBy, err)
	}
	probs, err := Lint(write("{user_id: 1}", "    m: summ(v)\n"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range probs {
		got = append(got, p.String())
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{"funcs.yml:7: function \"W\": group_by: want a field name or a list of field names", `unknown aggregate "summ"`} {
		if !strings.Contains(all, want) {
			t.Errorf("lint lacks %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "unknown function") {
		t.Errorf("lint reports a follow-on unknown function:\n%s", all)
	}
}

// TestWindowMaxAhead reads max_ahead: a duration, off (no bound), or
// nothing (the operator's default); a bad one is an error at its field.
func TestWindowMaxAhead(t *testing.T) {
	t.Parallel()
	for v, want := range map[string]time.Duration{"": 0, "1h": time.Hour, "off": -1} {
		w := &Window{Type: "tumbling", Size: "1m", TimeField: "ts", MaxAhead: v, Aggregate: Aggregates{{"n", "count()"}}}
		spec, err := w.Spec()
		if err != nil || spec.MaxAhead != want {
			t.Errorf("max_ahead %q: %v, %v; want %v", v, spec.MaxAhead, err, want)
		}
	}
	w := &Window{Type: "tumbling", Size: "1m", TimeField: "ts", MaxAhead: "a day", Aggregate: Aggregates{{"n", "count()"}}}
	if _, err := w.Spec(); err == nil || !strings.Contains(err.Error(), "window.max_ahead: max_ahead: bad duration") {
		t.Errorf("max_ahead \"a day\": %v", err)
	}
}
