package config

import (
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

func TestResolvedExpandsACopy(t *testing.T) {
	t.Setenv("KISFLOW_TEST_RESOLVE_HOST", "db.example")
	set, err := ImportFS(fstest.MapFS{
		"c.yml": {Data: []byte("kistype: conn\ncname: c\ntype: redis\naddrs: ${KISFLOW_TEST_RESOLVE_HOST}:${KISFLOW_TEST_RESOLVE_PORT:-6379}\n" +
			"key: ${KISFLOW_TEST_RESOLVE_UNSET_B}\nparams:\n  db: ${KISFLOW_TEST_RESOLVE_UNSET_A}\n")},
		"g.yml": {Data: []byte("kistype: global\nplugins:\n  other:\n    x:\n      host: ${KISFLOW_TEST_RESOLVE_HOST}\n      port: ${KISFLOW_TEST_RESOLVE_UNSET_A}\n")},
	}, ".")
	if err != nil {
		t.Fatal(err)
	}
	r, missing := set.Resolved()
	if c := r.Conns["c"]; c.Addrs != "db.example:6379" || c.Key != "" || c.Params["db"] != "" {
		t.Errorf("resolved connector %+v", c)
	}
	if want := []string{"KISFLOW_TEST_RESOLVE_UNSET_A", "KISFLOW_TEST_RESOLVE_UNSET_B"}; !slices.Equal(missing, want) {
		t.Errorf("missing %v, want %v", missing, want)
	}
	out, err := Marshal(KindGlobal, r.Global)
	if err != nil || !strings.Contains(string(out), "host: db.example") {
		t.Errorf("resolved global (%v):\n%s", err, out)
	}
	// The set keeps its references.
	if c := set.Conns["c"]; c.Addrs != "${KISFLOW_TEST_RESOLVE_HOST}:${KISFLOW_TEST_RESOLVE_PORT:-6379}" || c.Params["db"] != "${KISFLOW_TEST_RESOLVE_UNSET_A}" {
		t.Errorf("the set was changed: %+v", c)
	}
	if out, _ := Marshal(KindGlobal, set.Global); !strings.Contains(string(out), "host: ${KISFLOW_TEST_RESOLVE_HOST}") {
		t.Errorf("the set's global was changed:\n%s", out)
	}
}

func TestConnUses(t *testing.T) {
	set, err := ImportFS(fstest.MapFS{"a.yml": {Data: []byte(
		"kistype: flow\nstatus: 1\nflow_name: A\nflows:\n  - fname: Save1\n  - fname: Load1\nstream:\n  source: src\n  sink: out\n  dead_letter: dl\n" +
			"---\nkistype: flow\nstatus: 1\nflow_name: B\nflows:\n  - fname: Save1\n" +
			"---\nkistype: func\nfname: Save1\nfmode: Save\noption:\n  cname: db\n" +
			"---\nkistype: func\nfname: Load1\nfmode: Load\noption:\n  cname: cache\n" +
			"---\nkistype: conn\ncname: src\ntype: memory\n---\nkistype: conn\ncname: out\ntype: memory\n---\nkistype: conn\ncname: dl\ntype: memory\n" +
			"---\nkistype: conn\ncname: db\ntype: memory\n---\nkistype: conn\ncname: cache\ntype: memory\n---\nkistype: conn\ncname: spare\ntype: memory\n")}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	all := set.ConnUses()
	want := map[string]ConnUse{"src": {Source: true}, "out": {Sink: true}, "dl": {Sink: true}, "db": {Sink: true}, "cache": {Load: true}}
	if len(all) != len(want) {
		t.Errorf("uses %v, want %v", all, want)
	}
	for n, u := range want {
		if all[n] != u {
			t.Errorf("%s: %+v, want %+v", n, all[n], u)
		}
	}
	if b := set.ConnUses("B"); len(b) != 1 || b["db"] != (ConnUse{Sink: true}) {
		t.Errorf("flow B uses %v", b)
	}
}
