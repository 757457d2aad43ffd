package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func checkDocs(t *testing.T, docs string) []Problem {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.yml"), []byte(docs), 0o644); err != nil {
		t.Fatal(err)
	}
	probs, err := Lint(dir)
	if err != nil {
		t.Fatal(err)
	}
	return probs
}

// A function setting both retry_duration and return_duration: the
// original reads the second, this engine the first; lint names both, an
// error when they differ.
func TestBothRetryDurationsAreReported(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ret string
		sev Severity
	}{{"300", SevError}, {"500", SevWarning}} {
		probs := checkDocs(t, "kistype: func\nfname: F\nfmode: Calculate\noption:\n  retry_duration: 500\n  return_duration: "+tc.ret+"\n")
		if len(probs) != 1 || probs[0].Severity != tc.sev || !strings.Contains(probs[0].Msg, "both retry_duration (500) and return_duration ("+tc.ret+")") || probs[0].Pos.Line == 0 {
			t.Errorf("return_duration %s: %v", tc.ret, probs)
		}
	}
}

// A connector with no type loads as a label, as in the original: a
// warning, and an error only when a stream goes through it.
func TestConnectorWithoutTypeIsALabel(t *testing.T) {
	t.Parallel()
	probs := checkDocs(t, "kistype: conn\ncname: C\ntype: \"\"\n")
	if len(probs) != 1 || probs[0].Severity != SevWarning || !strings.Contains(probs[0].Msg, "no type: it loads as a label") {
		t.Errorf("unused: %v", probs)
	}
	probs = checkDocs(t, "kistype: conn\ncname: C\ntype: \"\"\n---\nkistype: func\nfname: F\nfmode: Calculate\n---\nkistype: flow\nstatus: 1\nflow_name: L\nflows:\n  - fname: F\nstream:\n  source: C\n")
	found := false
	for _, p := range probs {
		found = found || (p.Severity == SevError && strings.Contains(p.Msg, `missing type, and flow "L" streams through it`))
	}
	if !found {
		t.Errorf("streamed: %v", probs)
	}
}
