package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver/fields"
)

// testCase is a `kistype: test` document: rows into a flow (or one
// function), with the rows, dead letters and writes it must produce.
type testCase struct {
	Name   string               `yaml:"name"`
	Flow   string               `yaml:"flow"`
	Func   string               `yaml:"func"`
	Params map[string]any       `yaml:"params"`
	Input  []any                `yaml:"input"`
	Mocks  map[string]*testMock `yaml:"mocks"`
	Expect testExpect           `yaml:"expect"`

	pos       config.Pos
	paramsPos config.Pos            // where params: is, or pos
	keyPos    map[string]config.Pos // where each mocks.NAME and expect.written.NAME is
}

// at returns where the key (such as "mocks.users") is, or where the test
// begins.
func (tc *testCase) at(key string) config.Pos {
	if p, ok := tc.keyPos[key]; ok {
		return p
	}
	return tc.pos
}

// testMock stands in for a connector a YAML Load reads through, or for
// the providers of a remote connector.
type testMock struct {
	Records []map[string]any `yaml:"records"`
	// Provider is, for a connector of type remote, the folder (relative
	// to the test's file) of the provider's configuration: its functions
	// run in the test's process, as kisflow serve would run them.
	Provider string `yaml:"provider"`
}

// testExpect is what a test's run must produce.
type testExpect struct {
	Rows          []any            `yaml:"rows"`
	Unordered     bool             `yaml:"unordered"`
	DeadLetters   []testDeadLetter `yaml:"dead_letters"`
	Written       map[string][]any `yaml:"written"`
	ErrorContains string           `yaml:"error_contains"`
	IgnoreFields  []string         `yaml:"ignore_fields"`
}

// testDeadLetter is an expected dead letter; every field it sets must match.
type testDeadLetter struct {
	Row            any    `yaml:"row"`
	Func           string `yaml:"func"`
	ReasonContains string `yaml:"reason_contains"`
}

// The keys a test document may use, for suggestions on a typo.
var (
	testKeys       = []string{"kistype", "name", "flow", "func", "params", "input", "mocks", "expect"}
	expectKeys     = []string{"rows", "unordered", "dead_letters", "written", "error_contains", "ignore_fields"}
	deadLetterKeys = []string{"row", "func", "reason_contains"}
	mockKeys       = []string{"records", "provider"}
)

// title names the test in reports: its name, or where it is.
func (tc *testCase) title() string {
	what := "flow " + tc.Flow
	if tc.Func != "" {
		what = "func " + tc.Func
	}
	if tc.Name != "" {
		return fmt.Sprintf("%s %q (%s)", tc.pos, tc.Name, what)
	}
	return fmt.Sprintf("%s (%s)", tc.pos, what)
}

// readTests reads every `kistype: test` document of the YAML files below
// dir, in file order. Problems with their shape are returned with their
// file and line; err is for a folder that cannot be read.
func readTests(dir string) ([]*testCase, []config.Problem, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != dir && d.Name() == ".kisflow" {
				return filepath.SkipDir
			}
			return nil
		}
		if ext := filepath.Ext(p); ext == ".yml" || ext == ".yaml" {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read tests: %w", err)
	}
	sort.Strings(files)
	var tests []*testCase
	var probs []config.Problem
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, err
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var doc yaml.Node
			if err := dec.Decode(&doc); err != nil {
				break // io.EOF, or a broken file that lint reports at its line
			}
			root := &doc
			if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
				root = root.Content[0]
			}
			if root.Kind != yaml.MappingNode || mapValue(root, "kistype") == nil || mapValue(root, "kistype").Value != string(config.KindTest) {
				continue
			}
			tc, ps := parseTest(f, root)
			probs = append(probs, ps...)
			if tc != nil {
				tests = append(tests, tc)
			}
		}
	}
	return tests, probs, nil
}

// mapValue returns the value of key in a mapping node, or nil.
func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// unknownKeys reports the keys of mapping n that are not in known.
func unknownKeys(file string, n *yaml.Node, where string, known []string) []config.Problem {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	var probs []config.Problem
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if !slices.Contains(known, k.Value) {
			probs = append(probs, config.Problem{Pos: config.Pos{File: file, Line: k.Line},
				Msg: fmt.Sprintf("test: unknown key %q in %s%s (known: %s)", k.Value, where, config.SuggestName(k.Value, known), strings.Join(known, ", "))})
		}
	}
	return probs
}

func parseTest(file string, root *yaml.Node) (*testCase, []config.Problem) {
	at := func(n *yaml.Node) config.Pos {
		if n == nil {
			return config.Pos{File: file, Line: root.Line}
		}
		return config.Pos{File: file, Line: n.Line}
	}
	bad := func(n *yaml.Node, format string, args ...any) []config.Problem {
		return []config.Problem{{Pos: at(n), Msg: "test: " + fmt.Sprintf(format, args...)}}
	}
	probs := unknownKeys(file, root, "a test", testKeys)
	exp := mapValue(root, "expect")
	probs = append(probs, unknownKeys(file, exp, "expect", expectKeys)...)
	if dl := mapValue(exp, "dead_letters"); dl != nil && dl.Kind == yaml.SequenceNode {
		for _, d := range dl.Content {
			probs = append(probs, unknownKeys(file, d, "expect.dead_letters", deadLetterKeys)...)
		}
	}
	if m := mapValue(root, "mocks"); m != nil && m.Kind == yaml.MappingNode {
		for i := 1; i < len(m.Content); i += 2 {
			probs = append(probs, unknownKeys(file, m.Content[i], "mocks."+m.Content[i-1].Value, mockKeys)...)
		}
	}
	tc := &testCase{pos: at(root), paramsPos: at(mapValue(root, "params")), keyPos: map[string]config.Pos{}}
	for prefix, m := range map[string]*yaml.Node{"mocks.": mapValue(root, "mocks"), "expect.written.": mapValue(exp, "written")} {
		if m != nil && m.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(m.Content); i += 2 {
				tc.keyPos[prefix+m.Content[i].Value] = at(m.Content[i])
			}
		}
	}
	if err := root.Decode(tc); err != nil {
		return nil, append(probs, bad(root, "%s", strings.TrimPrefix(err.Error(), "yaml: "))...)
	}
	switch {
	case tc.Flow == "" && tc.Func == "":
		probs = append(probs, bad(root, "name the flow to run (flow: NAME) or one function (func: NAME)")...)
	case tc.Flow != "" && tc.Func != "":
		probs = append(probs, bad(mapValue(root, "func"), "give flow or func, not both")...)
	}
	if len(tc.Input) == 0 {
		probs = append(probs, bad(mapValue(root, "input"), "input: give the rows to feed, a list of maps (or of JSON text)")...)
	}
	if exp == nil {
		probs = append(probs, bad(root, "expect: give the rows the run must produce (expect: {rows: [...]}; rows: [] for none)")...)
	}
	for i, d := range tc.Expect.DeadLetters {
		if d.Row == nil && d.Func == "" && d.ReasonContains == "" {
			probs = append(probs, bad(mapValue(exp, "dead_letters"), "expect.dead_letters[%d]: give row, func or reason_contains", i)...)
		}
	}
	if tc.Flow != "" && tc.Params != nil {
		for fname, v := range tc.Params {
			if _, ok := v.(map[string]any); !ok {
				probs = append(probs, bad(mapValue(root, "params"), "params of a flow test are per function: params: {%s: {key: value}}", fname)...)
				break
			}
		}
	}
	return tc, probs
}

// paramText is a YAML param value as the configuration holds it: text.
func paramText(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return ""
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprint(v)
}

// stepParams returns the params a test sets for function fname.
func (tc *testCase) stepParams(fname string) map[string]string {
	src := tc.Params
	if tc.Flow != "" {
		m, _ := tc.Params[fname].(map[string]any)
		src = m
	}
	if len(src) == 0 {
		return nil
	}
	out := make(map[string]string, len(src))
	for k, v := range src {
		out[k] = paramText(v)
	}
	return out
}

// normalize turns a row into the plain JSON shape tests compare: maps,
// slices, strings, numbers (int64 when integral and in range, so that
// large integers compare exactly; else float64), booleans and nil. JSON text (a string
// or []byte holding an object or array) is decoded; structs go through
// their JSON form.
func normalize(v any) any {
	var data []byte
	switch x := v.(type) {
	case nil:
		return nil
	case json.RawMessage:
		data = x
	case []byte:
		data = x
	case string:
		t := strings.TrimSpace(x)
		if !strings.HasPrefix(t, "{") && !strings.HasPrefix(t, "[") {
			return x
		}
		data = []byte(t)
	default:
		b, err := json.Marshal(jsonSafe(v))
		if err != nil {
			return fmt.Sprintf("%v", v)
		}
		data = b
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var out any
	if err := dec.Decode(&out); err != nil || dec.More() {
		return string(data)
	}
	return fields.ExactNumbers(out)
}

// jsonSafe converts what YAML decodes (map[any]any is not produced by
// yaml.v3, but time.Time is) into values encoding/json writes as the
// engine's rows carry them.
func jsonSafe(v any) any {
	switch x := v.(type) {
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = jsonSafe(e)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = jsonSafe(e)
		}
		return s
	}
	return v
}

// inputText is an input row as a source delivers it: JSON text. A string
// is taken as the line itself (so a test can feed a malformed one).
func inputText(v any) (string, error) {
	if s, ok := v.(string); ok {
		return s, nil
	}
	b, err := json.Marshal(jsonSafe(v))
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// show prints a normalized value compactly.
func show(v any) string {
	if s, ok := v.(string); ok {
		return fmt.Sprintf("%q", s)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// equalValues compares normalized values; numbers by value: integers
// exactly, an integer and a float when the float is that integer.
func equalValues(a, b any) bool {
	switch x := a.(type) {
	case int64:
		switch y := b.(type) {
		case int64:
			return x == y
		case float64:
			return intIsFloat(x, y)
		}
		return false
	case float64:
		if y, ok := b.(int64); ok {
			return intIsFloat(y, x)
		}
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !equalValues(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !equalValues(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return a == b
}

// intIsFloat reports whether f is exactly the integer i.
func intIsFloat(i int64, f float64) bool {
	return f == math.Trunc(f) && f >= math.MinInt64 && f < math.MaxInt64 && int64(f) == i && float64(i) == f
}

// rowDiff describes how got differs from want, field by field for maps.
func rowDiff(prefix string, want, got any) []string {
	wm, ok1 := want.(map[string]any)
	gm, ok2 := got.(map[string]any)
	if !ok1 || !ok2 {
		return []string{fmt.Sprintf("%s: want %s, got %s", prefix, show(want), show(got))}
	}
	keys := make([]string, 0, len(wm)+len(gm))
	for k := range wm {
		keys = append(keys, k)
	}
	for k := range gm {
		if _, ok := wm[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		w, inW := wm[k]
		g, inG := gm[k]
		switch {
		case !inG:
			out = append(out, fmt.Sprintf("%s: field %s: want %s, got no such field", prefix, k, show(w)))
		case !inW:
			out = append(out, fmt.Sprintf("%s: field %s: not expected, got %s", prefix, k, show(g)))
		case !equalValues(w, g):
			out = append(out, fmt.Sprintf("%s: field %s: want %s, got %s", prefix, k, show(w), show(g)))
		}
	}
	return out
}

// diffRows compares the rows a run produced with those expected, in order
// or not, and describes each difference.
func diffRows(what string, want, got []any, unordered bool) []string {
	var out []string
	if len(want) != len(got) {
		out = append(out, fmt.Sprintf("%s: want %d, got %d", what, len(want), len(got)))
	}
	if !unordered {
		for i := range max(len(want), len(got)) {
			p := fmt.Sprintf("%s[%d]", what, i)
			switch {
			case i >= len(got):
				out = append(out, fmt.Sprintf("%s: want %s, got no row", p, show(want[i])))
			case i >= len(want):
				out = append(out, fmt.Sprintf("%s: not expected, got %s", p, show(got[i])))
			case !equalValues(want[i], got[i]):
				out = append(out, rowDiff(p, want[i], got[i])...)
			}
		}
		return out
	}
	used := make([]bool, len(got))
	var missing []int
	for i, w := range want {
		found := false
		for j, g := range got {
			if !used[j] && equalValues(w, g) {
				used[j], found = true, true
				break
			}
		}
		if !found {
			missing = append(missing, i)
		}
	}
	var extra []int
	for j := range got {
		if !used[j] {
			extra = append(extra, j)
		}
	}
	// Pair what is left in order, for field-by-field diffs.
	for n, i := range missing {
		if n < len(extra) {
			out = append(out, rowDiff(fmt.Sprintf("%s: want[%d] vs got[%d] (unordered)", what, i, extra[n]), want[i], got[extra[n]])...)
			continue
		}
		out = append(out, fmt.Sprintf("%s: want[%d] %s is not in the output", what, i, show(want[i])))
	}
	for _, j := range extra[min(len(missing), len(extra)):] {
		out = append(out, fmt.Sprintf("%s: got[%d] %s was not expected", what, j, show(got[j])))
	}
	return out
}

// gotLetter is a dead letter a test run produced, normalized.
type gotLetter struct {
	fn, reason string
	row        any
}

func (g gotLetter) String() string {
	fn := ""
	if g.fn != "" {
		fn = " from " + g.fn
	}
	return fmt.Sprintf("%s%s: %s", show(g.row), fn, g.reason)
}

func (d testDeadLetter) String() string {
	var parts []string
	if d.Row != nil {
		parts = append(parts, "row "+show(normalize(d.Row)))
	}
	if d.Func != "" {
		parts = append(parts, "func "+d.Func)
	}
	if d.ReasonContains != "" {
		parts = append(parts, fmt.Sprintf("reason containing %q", d.ReasonContains))
	}
	return strings.Join(parts, ", ")
}

func (d testDeadLetter) matches(g gotLetter) bool {
	return (d.Row == nil || equalValues(normalize(d.Row), g.row)) &&
		(d.Func == "" || d.Func == g.fn) &&
		(d.ReasonContains == "" || strings.Contains(g.reason, d.ReasonContains))
}

// diffLetters matches each expected dead letter with one produced, in any
// order, and describes those left over on either side.
func diffLetters(want []testDeadLetter, got []gotLetter) []string {
	used := make([]bool, len(got))
	var out []string
	for i, w := range want {
		found := false
		for j, g := range got {
			if !used[j] && w.matches(g) {
				used[j], found = true, true
				break
			}
		}
		if !found {
			out = append(out, fmt.Sprintf("dead_letters[%d]: want %s, got none that matches", i, w))
		}
	}
	for j, g := range got {
		if !used[j] {
			out = append(out, fmt.Sprintf("dead letter not expected: %s", g))
		}
	}
	return out
}

// withoutFields drops the named fields from each map row, in place: fields
// whose value a test cannot know (a processing-time window's bounds).
func withoutFields(rows []any, names []string) []any {
	if len(names) == 0 {
		return rows
	}
	for _, r := range rows {
		if m, ok := r.(map[string]any); ok {
			for _, n := range names {
				delete(m, n)
			}
		}
	}
	return rows
}
