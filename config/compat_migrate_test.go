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

// importDocs imports files (name: YAML) written to a fresh folder.
func importDocs(t *testing.T, files map[string]string) (*Set, []Problem, error) {
	t.Helper()
	dir := t.TempDir()
	for name, docs := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(docs), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	probs, err := Lint(dir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Import(dir)
	return s, probs, err
}

// Folders the original loads, because it never looks at disabled flows nor
// at functions no enabled flow runs, load here too, with warnings; the same
// problems in what an enabled flow runs stay errors.
func TestWhatTheOriginalNeverLooksAtLoads(t *testing.T) {
	t.Parallel()
	const known = "kistype: func\nfname: Known\nfmode: Calculate\n"
	enabled := "kistype: flow\nstatus: 1\nflow_name: F\nflows:\n  - fname: Known\n"
	disabled := "kistype: flow\nstatus: 0\nflow_name: F\nflows:\n  - fname: Gone\n"
	for _, tc := range []struct {
		name  string
		files map[string]string
		err   string // "" : Import succeeds
		warn  string
	}{
		{"a disabled flow naming a function that is gone", map[string]string{"a.yml": known + "---\n" + disabled},
			"", `flow "F" names unknown function "Gone"; the flow is disabled`},
		{"the same, enabled", map[string]string{"a.yml": known + "---\n" + strings.Replace(disabled, "status: 0", "status: 1", 1)},
			`flow "F" names unknown function "Gone"`, ""},
		{"a disabled flow named as an enabled one, after it", map[string]string{"a.yml": known + "---\n" + enabled, "b.yml": disabled},
			"", `b.yml:3: warning: duplicate flow "F" (also defined at `},
		{"a disabled flow named as an enabled one, before it", map[string]string{"a.yml": known + "---\n" + disabled, "b.yml": enabled},
			"", `a.yml:7: warning: duplicate flow "F" (also defined at `},
		{"two enabled flows of one name", map[string]string{"a.yml": known + "---\n" + enabled, "b.yml": enabled},
			`duplicate flow "F"`, ""},
		{"an unused function naming a missing connector", map[string]string{"a.yml": "kistype: func\nfname: S\nfmode: Save\noption:\n  cname: Gone\n"},
			"", `function "S": unknown connector "Gone"; no enabled flow runs the function`},
		{"an unused function with a lowercase fmode", map[string]string{"a.yml": "kistype: func\nfname: C\nfmode: calculate\n"},
			"", `function "C": unknown fmode "calculate" (did you mean Calculate? fmode is case-sensitive, as in the original); no enabled flow runs`},
		{"a used function with a lowercase fmode", map[string]string{"a.yml": "kistype: func\nfname: Known\nfmode: calculate\n---\n" + enabled},
			`function "Known": unknown fmode "calculate"`, ""},
		{"a function only a disabled flow runs, naming a missing connector",
			map[string]string{"a.yml": "kistype: func\nfname: Gone\nfmode: Save\noption:\n  cname: Nope\n---\n" + disabled},
			"", `function "Gone": unknown connector "Nope"; no enabled flow runs the function`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, probs, err := importDocs(t, tc.files)
			if tc.err == "" && err != nil {
				t.Fatalf("Import: %v", err)
			}
			if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("Import: %v, want %q", err, tc.err)
			}
			if tc.warn != "" {
				found := false
				for _, p := range probs {
					found = found || (p.Severity == SevWarning && strings.Contains(filepath.ToSlash(p.String()), tc.warn))
				}
				if !found {
					t.Errorf("no warning %q in %v", tc.warn, probs)
				}
			}
			if err == nil && s.Flows["F"] != nil && strings.Contains(tc.name, "named as an enabled one") && !s.Flows["F"].Enabled() {
				t.Errorf("flow F kept is the disabled one")
			}
		})
	}
}
