package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

// bigFlow returns a flow document of about size bytes, one step per line
// pair, and the number of lines it has. head goes before the steps.
func bigFlow(size int, head string) (string, int) {
	var b strings.Builder
	b.WriteString("kistype: flow\nstatus: 1\nflow_name: Big\n" + head + "flows:\n")
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, "  - fname: Step%05d\n    params: {k: v%d}\n", i, i)
	}
	return b.String(), strings.Count(b.String(), "\n")
}

func TestLintNamesTheLineOfALargeMalformedFile(t *testing.T) {
	t.Parallel()
	// Under 5000 lines, with a valid flow sequence over two lines on top.
	small, smallLines := bigFlow(92<<10, "tags: [a,\n  b]\n")
	var long strings.Builder
	for i := 0; long.Len() < 100<<10; i++ { // over 5000 lines
		fmt.Fprintf(&long, "---\nkistype: func\nfname: F%d\nfmode: Verify\n", i)
	}
	longLines := strings.Count(long.String(), "\n")
	tests := []struct {
		name, doc string
		line      int
	}{
		// The valid two-line sequence at the top must not be taken for the
		// error, nor the start of the flows list.
		{"bad indentation at the end", small + " - fname: Late\n", smallLines + 1},
		{"mapping in a value in the middle", strings.Replace(small, "fname: Step01000", "fname: Step01000: x", 1), 6 + 2*1000 + 1},
		// yaml.v3 names the line before an unclosed bracket.
		{"unclosed bracket after 5000 lines", long.String() + "---\nkistype: func\nfname: G\nfmode: [Verify\n", longLines + 4},
		{"unclosed quote after 5000 lines", long.String() + "---\nkistype: func\nfname: \"G\nfmode: Verify\n", longLines + 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ImportFS(fstest.MapFS{"big.yml": {Data: []byte(tt.doc)}}, ".")
			var ce *Error
			if !errors.As(err, &ce) || len(ce.Problems) != 1 {
				t.Fatalf("want one problem, got %v", err)
			}
			if p := ce.Problems[0]; p.Pos.Line != tt.line || !strings.Contains(p.Msg, "malformed YAML") {
				t.Fatalf("got %v, want line %d", p, tt.line)
			}
			// Linear: a fixed number of parses, never one per prefix.
			if _, work := locateSyntaxError([]byte(tt.doc)); work > 6*len(tt.doc) {
				t.Fatalf("locating the error read %d bytes of a %d-byte file", work, len(tt.doc))
			}
		})
	}
}

// BenchmarkLintMalformed lints a folder holding one 92 KB flow whose last
// line is badly indented (the case that took 42 s when every prefix was
// parsed).
func BenchmarkLintMalformed(b *testing.B) {
	doc, _ := bigFlow(92<<10, "")
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "big.yml"), []byte(doc+" - fname: Late\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(doc)))
	for b.Loop() {
		probs, err := Lint(dir)
		if err != nil || len(probs) != 1 || probs[0].Pos.Line == 0 {
			b.Fatalf("lint: %v %v", probs, err)
		}
	}
}
