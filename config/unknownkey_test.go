package config

import (
	"errors"
	"strings"
	"testing"
	"testing/fstest"
)

// An unknown key inside a stream block is an error (it would silently
// change the job's guarantees); elsewhere it is a warning. Both name the
// known key one or two typos away.
func TestUnknownKeySeverityAndSuggestion(t *testing.T) {
	tests := []struct {
		name, doc string
		fails     bool
		want      string
	}{
		{"stream typo", "kistype: flow\nflow_name: F\nstream:\n  source: s\n  delivry: exactly-once\n",
			true, `a.yml:5: unknown field "stream.delivry" (did you mean "delivery"?)`},
		{"stream unlike anything", "kistype: flow\nflow_name: F\nstream:\n  source: s\n  zzzzzzzz: 1\n",
			true, `a.yml:5: unknown field "stream.zzzzzzzz"`},
		{"func top level", "kistype: func\nfname: F\nfmode: Verify\nfmdoe: Verify\ncolour: blue\n",
			false, `a.yml:4: warning: unknown field "fmdoe" (did you mean "fmode"?)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fsys := fstest.MapFS{"a.yml": {Data: []byte(tt.doc)}}
			_, err := ImportFS(fsys, ".")
			var ce *Error
			if failed := errors.As(err, &ce); failed != tt.fails {
				t.Fatalf("Import error %v, want failure %v", err, tt.fails)
			}
			probs, err := lintFS(t, fsys)
			if err != nil {
				t.Fatal(err)
			}
			var all []string
			for _, p := range probs {
				all = append(all, p.String())
			}
			if !strings.Contains(strings.Join(all, "\n"), tt.want) {
				t.Errorf("problems %q do not include %q", all, tt.want)
			}
		})
	}
}

func lintFS(t *testing.T, fsys fstest.MapFS) ([]Problem, error) {
	t.Helper()
	s, probs, err := load(fsys, ".", "")
	if err != nil {
		return nil, err
	}
	return append(probs, s.Check()...), nil
}
