package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An unknown kistype lists every kind, test too, and names the one it
// resembles whatever its case.
func TestUnknownKistypeNamesTest(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "t_test.yml"), []byte("kistype: Test\nflow: F\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	probs, err := Lint(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(probs) != 1 || !strings.Contains(probs[0].Msg, `unknown kistype "Test" (want func, flow, conn, global or test) (did you mean test?)`) {
		t.Fatalf("kistype: Test: %v", probs)
	}
}
