package config

import (
	"strings"
	"testing"
	"testing/fstest"
)

// TestStreamEventTimeKeys: time_field, lateness and idle_timeout read from
// the stream block; a negative duration, one without a time_field and a
// time_field that is no field name are errors at their line.
func TestStreamEventTimeKeys(t *testing.T) {
	t.Parallel()
	fsys := fstest.MapFS{
		"ok.yml": {Data: []byte(`kistype: flow
status: 1
flow_name: OK
flows:
  - fname: F
stream:
  source: c
  time_field: ts
  lateness: 30s
  idle_timeout: 5s
`)},
		"bad.yml": {Data: []byte(`kistype: flow
status: 1
flow_name: Bad
flows:
  - fname: F
stream:
  source: c
  time_field: " ts"
  lateness: -1s
---
kistype: flow
status: 1
flow_name: NoField
flows:
  - fname: F
stream:
  source: c
  idle_timeout: 1m
`)},
		"f.yml": {Data: []byte("kistype: func\nfname: F\nfmode: Calculate\n")},
		"c.yml": {Data: []byte("kistype: conn\ncname: c\ntype: file\nparams:\n  path: x.jsonl\n")},
	}
	s, probs, err := load(fsys, ".", "")
	if err != nil {
		t.Fatal(err)
	}
	st := s.Flows["OK"].Stream
	if st.TimeField != "ts" || st.Lateness.Std().String() != "30s" || st.IdleTimeout.Std().String() != "5s" {
		t.Fatalf("read %+v", st)
	}
	probs = append(probs, s.Check()...)
	sortProblems(probs)
	var got []string
	for _, p := range probs {
		got = append(got, p.String())
	}
	want := []string{
		`bad.yml:8: flow "Bad": stream time_field " ts" is not a field name (want e.g. ts, or event.ts for a nested field)`,
		`bad.yml:9: flow "Bad": stream lateness -1s is negative`,
		`bad.yml:18: flow "NoField": stream idle_timeout needs stream.time_field (the row field that holds the event time)`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
