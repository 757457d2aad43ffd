package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

func TestImportKisFlowFormat(t *testing.T) {
	t.Parallel()
	s, err := Import("testdata/kisflow")
	if err != nil {
		t.Fatal(err)
	}
	if got := len(s.Funcs); got != 3 {
		t.Fatalf("functions: got %d, want 3 (nested folder and .yaml included)", got)
	}
	f2 := s.Funcs["funcName2"]
	if f2 == nil || f2.FMode != Save || f2.Option.CName != "ConnName1" || f2.Option.RetryTimes != 3 {
		t.Fatalf("funcName2: %+v", f2)
	}
	if f2.Option.RetryDuration != 500 {
		t.Errorf("return_duration alias: RetryDuration = %d, want 500", f2.Option.RetryDuration)
	}
	if got := s.Funcs["funcName3"].Option.DefaultParams["default1"]; got != "3" {
		t.Errorf("numeric param: got %q, want \"3\"", got)
	}
	if got := s.Funcs["funcName1"].Source.Name; got != "公众号抖音商城户订单数据" {
		t.Errorf("source name: %q", got)
	}
	c := s.Conns["ConnName1"]
	if c.Load != nil || len(c.Save) != 1 || c.Save[0] != "funcName2" || c.Type != "redis" {
		t.Errorf("conn: %+v", c)
	}
	if got := c.AddrList(); len(got) != 3 || got[1] != "0.0.0.0:9999" {
		t.Errorf("addrs: %v", got)
	}
	if s.Global == nil || !s.Global.PrometheusEnable || !s.Global.PrometheusListen || s.Global.PrometheusServe != "0.0.0.0:20004" {
		t.Errorf("global: %+v", s.Global)
	}
	fl := s.Flows["flowName1"]
	if !fl.Enabled() || len(fl.Flows) != 3 {
		t.Fatalf("flow: %+v", fl)
	}
	p := MergedParams(s.Funcs["funcName1"], fl.Flows[0])
	if p["myKey1"] != "flowValue1-1" || p["default1"] != "funcName1_param1" || p["myKey2"] != "flowValue1-2" {
		t.Errorf("merged params: %v", p)
	}
	if pos := s.Pos(KindFunc, "funcName2", "option.cname"); pos.Line != 10 || !strings.HasSuffix(pos.File, filepath.Join("nested", "func-funcName2.yaml")) {
		t.Errorf("position of option.cname: %v", pos)
	}
}

func TestLintReportsEveryProblem(t *testing.T) {
	t.Parallel()
	probs, err := Lint("testdata/bad", WithConnTypes("memory"))
	if err != nil {
		t.Fatal(err)
	}
	d := "testdata/bad/"
	want := []string{
		d + `bad-kistype.yml:1: unknown kistype "function" (want func, flow, conn, global or test) (did you mean func?)`,
		d + `conns.yml:6: duplicate connector "C1" (also defined at ` + d + `conns.yml:1)`,
		d + `conns.yml:11: warning: connector "C2": no driver for type "carrier-pigeon" in this binary (known: memory); it loads as a label for its callbacks (Connector.Driver is nil), and a YAML-only Load or Save through it has no body`,
		d + `conns.yml:13: warning: connector "C2": save names unknown function "Ghost" (the list is informational)`,
		d + `dup-a.yml:4: warning: unknown field "colour"`,
		d + `flow-unknown-func.yml:6: warning: flow "Disabled" names unknown function "Missing"; the flow is disabled (status: 0), so it loads (as in the original), but enabling it is refused`,
		d + `flows-dup.yml:9: duplicate flow "Twice" (also defined at ` + d + `flows-dup.yml:1)`,
		d + `func-bad-mode.yml:3: function "BadMode": unknown fmode "calculate" (did you mean Calculate? fmode is case-sensitive, as in the original)`,
		d + `func-save-nocname.yml:3: warning: function "SaveNoConn": fmode Save has no connector (option.cname): a YAML-only Save needs one, and a Go body calling Connector gets an error`,
		d + `func-unknown-cname.yml:5: function "LoadBadConn": unknown connector "NoSuchConn"`,
		d + `malformed.yml:3: malformed YAML: did not find expected ',' or ']'`,
		d + `no-kistype.yml:1: missing kistype (want func, flow, conn, global or test)`,
		d + `sub/dup-b.yaml:2: duplicate function "Known" (also defined at ` + d + `dup-a.yml:1)`,
	}
	var got []string
	for _, p := range probs {
		got = append(got, filepath.ToSlash(p.String()))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("lint output:\n%s\n\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestImportFailsWithEveryError(t *testing.T) {
	t.Parallel()
	_, err := Import("testdata/bad")
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("want *Error, got %v", err)
	}
	for _, p := range ce.Problems {
		if p.Severity != SevError {
			t.Errorf("warning in Import's error: %v", p)
		}
	}
	if len(ce.Problems) != 8 { // the lint list less the connector type (unchecked) and the warnings
		t.Errorf("got %d problems:\n%v", len(ce.Problems), err)
	}
	if _, err := Import("testdata/does-not-exist"); err == nil {
		t.Error("missing folder: no error")
	}
}

func TestSyntaxErrorLines(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, doc string
		line      int
	}{
		{"mapping in value", "kistype: func\nfname: A\nfmode: Verify: x\n", 3},
		{"tab indentation", "kistype: func\nfname: A\n\tfmode: Verify\n", 3},
		{"unclosed sequence", "kistype: func\nfname: A\nfmode: [Verify\nother: 1\n", 3},
		{"second document", "kistype: func\nfname: A\nfmode: Verify\n---\nkistype: func\nfname: \"B\n", 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ImportFS(fstest.MapFS{"a.yml": {Data: []byte(tt.doc)}}, ".")
			var ce *Error
			if !errors.As(err, &ce) || len(ce.Problems) != 1 {
				t.Fatalf("want one problem, got %v", err)
			}
			if p := ce.Problems[0]; p.Pos.Line != tt.line || !strings.Contains(p.Msg, "malformed YAML") {
				t.Fatalf("got %v, want line %d", p, tt.line)
			}
		})
	}
}

func TestExportImportRoundTrip(t *testing.T) {
	t.Parallel()
	orig, err := Import("testdata/kisflow")
	if err != nil {
		t.Fatal(err)
	}
	t.Run("flow", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		if err := orig.ExportFlow("flowName1", dir); err != nil {
			t.Fatal(err)
		}
		back, err := Import(dir)
		if err != nil {
			t.Fatal(err)
		}
		want := NewSet()
		want.Flows["flowName1"] = orig.Flows["flowName1"]
		want.Funcs = orig.Funcs
		want.Conns = orig.Conns
		if !back.Equal(want) {
			t.Fatalf("round trip differs:\n got %+v\nwant %+v", back, want)
		}
		data, err := os.ReadFile(filepath.Join(dir, "func-funcName2.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(data), "kistype: func\n") || !strings.Contains(string(data), "return_duration: 500") {
			t.Errorf("exported file:\n%s", data)
		}
	})
	t.Run("all", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		if err := orig.Export(dir); err != nil {
			t.Fatal(err)
		}
		back, err := Import(dir)
		if err != nil {
			t.Fatal(err)
		}
		if !back.Equal(orig) {
			t.Fatalf("round trip differs")
		}
	})
	if err := orig.ExportFlow("nope", t.TempDir()); err == nil {
		t.Error("export of an unknown flow: no error")
	}
}

func TestBuildersMatchYAML(t *testing.T) {
	t.Parallel()
	built := NewSet()
	for _, err := range []error{
		built.AddFunc(NewFunc("funcName1", Verify).WithParams(map[string]string{"default1": "funcName1_param1", "myKey1": "funcName1_default"})),
		built.AddFunc(NewFunc("funcName2", Save).WithConn("ConnName1").WithRetry(3, 500).WithParams(map[string]string{"default1": "funcName2_param1"})),
		built.AddFunc(NewFunc("funcName3", Calculate).WithParams(map[string]string{"default1": "3"})),
		built.AddConn(&Conn{CName: "ConnName1", Type: "redis", Addrs: "0.0.0.0:9988,0.0.0.0:9999,0.0.0.0:9990", Key: "redis-key",
			Params: map[string]string{"args1": "value1", "args2": "value2"}, Save: []string{"funcName2"}}),
		built.AddFlow(NewFlow("flowName1",
			Step("funcName1", map[string]string{"myKey1": "flowValue1-1", "myKey2": "flowValue1-2"}),
			Step("funcName2", map[string]string{"myKey1": "flowValue2-1", "myKey2": "flowValue2-2"}),
			Step("funcName3", nil))),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := built.AddFunc(NewFunc("funcName1", Expand)); err == nil {
		t.Error("duplicate AddFunc: no error")
	}
	built.Global = &Global{PrometheusEnable: true, PrometheusListen: true, PrometheusServe: "0.0.0.0:20004"}
	imported, err := Import("testdata/kisflow")
	if err != nil {
		t.Fatal(err)
	}
	// The YAML carries source descriptions the builders did not set.
	for name, f := range imported.Funcs {
		built.Funcs[name].Source = f.Source
	}
	if !built.Equal(imported) {
		t.Fatal("built set differs from the imported one")
	}
	if probs := built.Check(); len(probs) != 0 {
		t.Fatalf("built set has problems: %v", probs)
	}
}

func TestRetryCapWarns(t *testing.T) {
	t.Parallel()
	s := NewSet()
	_ = s.AddFunc(NewFunc("F", Verify).WithRetry(80, 10))
	probs := s.Check()
	if len(probs) != 1 || probs[0].Severity != SevWarning || !strings.Contains(probs[0].Msg, "above the cap") {
		t.Fatalf("got %v", probs)
	}
}

func TestLintStreamsAndExpressions(t *testing.T) {
	t.Parallel()
	fsys := fstest.MapFS{
		"f.yml": {Data: []byte(`kistype: func
fname: Keep
fmode: Verify
filter: score >=
---
kistype: func
fname: Derive
fmode: Verify
calc:
  total: qty * (price
---
kistype: func
fname: Typo
fmode: Calculate
calc:
  total: rnd(qty * price)
  ok: "round(qty) + len(tags) + max(1, 2) + now().Year() + (all(tags, {# > 0}) ? 1 : 0)"
`)},
		"flow.yml": {Data: []byte(`kistype: flow
status: 1
flow_name: S
flows:
  - fname: Keep
stream:
  source: nowhere
  delivery: twice
  linger: soon
`)},
		"flow2.yml": {Data: []byte(`kistype: flow
status: 1
flow_name: T
flows:
  - fname: Keep
stream:
  source: c
  delivery: exactly-once
  max_consecutive_failures: -5
`)},
		"c.yml": {Data: []byte("kistype: conn\ncname: c\ntype: file\nparams:\n  path: ${KISFLOW_SURELY_UNSET_VAR}\n")},
	}
	s, probs, err := load(fsys, ".", "")
	if err != nil {
		t.Fatal(err)
	}
	probs = append(probs, s.Check()...)
	sortProblems(probs)
	var got []string
	for _, p := range probs {
		got = append(got, p.String())
	}
	want := []string{
		// Flow T streams from c: kisflow run would fail, so an error.
		`c.yml:5: connector "c": params.path uses unset environment variable(s) KISFLOW_SURELY_UNSET_VAR, and flow "T" uses the connector`,
		`f.yml:4: function "Keep": filter "score >=": unexpected token EOF (1:8)`,
		`f.yml:9: function "Derive": calc needs fmode Calculate, not Verify`,
		`f.yml:10: function "Derive": calc total: "qty * (price": unexpected token EOF (1:12)`,
		`f.yml:16: function "Typo": calc total: "rnd(qty * price)": unknown function rnd (did you mean round?) (1:1)`,
		`flow.yml:9: bad flow: bad duration "soon" (want e.g. 250ms, 2s, or milliseconds)`,
		`flow2.yml:8: flow "T": exactly-once needs a transactional sink (stream.sink)`,
		`flow2.yml:9: flow "T": stream max_consecutive_failures -5: want a positive number, or -1 to never stop`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestConnParams(t *testing.T) {
	t.Parallel()
	c := &Conn{CName: "c", Params: map[string]string{"wait": "250ms", "zero": "0s", "neg": "-1s", "junk": "soon", "n": "7", "small": "0", "word": "many"}}
	if d, err := c.ParamDuration("wait", time.Second, time.Nanosecond); err != nil || d != 250*time.Millisecond {
		t.Errorf("wait: %v %v", d, err)
	}
	if d, err := c.ParamDuration("absent", time.Second, time.Nanosecond); err != nil || d != time.Second {
		t.Errorf("default: %v %v", d, err)
	}
	if d, err := c.ParamDuration("zero", time.Second, 0); err != nil || d != 0 {
		t.Errorf("zero allowed: %v %v", d, err)
	}
	for _, name := range []string{"zero", "neg", "junk"} {
		if _, err := c.ParamDuration(name, time.Second, time.Nanosecond); err == nil || !strings.Contains(err.Error(), "bad "+name) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if n, err := c.ParamInt("n", 1, 1); err != nil || n != 7 {
		t.Errorf("n: %v %v", n, err)
	}
	if n, err := c.ParamInt("absent", 3, 1); err != nil || n != 3 {
		t.Errorf("default: %v %v", n, err)
	}
	for _, name := range []string{"small", "word"} {
		if _, err := c.ParamInt(name, 1, 1); err == nil || !strings.Contains(err.Error(), "bad "+name) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
