package cli

import (
	"strings"
	"testing"
)

// TestGraphRemote: kisflow graph marks a remote step with its service,
// declares a connector two steps use once, and lint accepts a Calculate function whose body is remote.
func TestGraphRemote(t *testing.T) {
	t.Parallel()
	code, out, stderr := run(t, "graph", "testdata/remote")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{`g1_f1["Price<br/>Calculate<br/>remote: pricing"]`, `g1_f1 -.->|remote call| g1_c_pricing`} {
		if !strings.Contains(out, want) {
			t.Errorf("mermaid lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "g1_c_pricing[("); n != 1 {
		t.Errorf("the connector two steps use is declared %d times:\n%s", n, out)
	}
	if code, out, stderr := run(t, "lint", "testdata/remote"); code != ExitOK {
		t.Fatalf("lint: exit %d: %s%s", code, out, stderr)
	}
}
