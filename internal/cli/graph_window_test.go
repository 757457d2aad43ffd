package cli

import (
	"strings"
	"testing"
)

// TestGraphWindow: kisflow graph shows a window step's type, size and
// grouping in its node.
func TestGraphWindow(t *testing.T) {
	t.Parallel()
	code, out, stderr := run(t, "graph", "testdata/window")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		`g1_f1["RevenuePerUser<br/>Calculate<br/>window: tumbling 1m by user_id"]`,
		`g1_f2["Trending<br/>Calculate<br/>window: sliding 1h every 10s by shop, item"]`,
		`g1_f3["Visits<br/>Calculate<br/>window: session gap 5m"]`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("mermaid lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = run(t, "graph", "--format", "dot", "testdata/window")
	if want := `g1_f1 [label="RevenuePerUser\nCalculate\nwindow: tumbling 1m by user_id"];`; code != ExitOK || !strings.Contains(out, want) {
		t.Errorf("dot: exit %d, lacks %s:\n%s", code, want, out)
	}
}
