package cli

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestKisflowTestRemoteStep: kisflow test says a remote step needs its
// provider's folder, and with mocks.CONN.provider runs the provider's
// functions in its own process: no registry, no kisflow serve.
func TestKisflowTestRemoteStep(t *testing.T) {
	t.Parallel()
	bin := stockKisflow(t)
	dir := t.TempDir()
	test := `kistype: test
name: priced
flow: Orders
input:
  - {id: 3, amount: 5}
expect:
  rows:
    - {id: 3, amount: 5, price: 10}
`
	writeFiles(t, dir, map[string]string{
		"provider/funcs.yml":    "kistype: func\nfname: Price\nfmode: Calculate\ncalc:\n  price: amount * 2\n",
		"caller/flow.yml":       remotePriceYAML("addrs: nats://127.0.0.1:1\n", ""),
		"caller/price_test.yml": test,
	})
	caller := filepath.Join(dir, "caller")
	code, out := kisflowTest(t, bin, caller)
	if code != ExitUsage || !strings.Contains(out, `function "Price" is remote (connector "pricing" of type remote)`) || !strings.Contains(out, "provider:") {
		t.Fatalf("without a provider: exit %d, want 2 saying the step is remote and how to give its provider:\n%s", code, out)
	}
	writeFiles(t, dir, map[string]string{"caller/price_test.yml": test + "mocks:\n  pricing:\n    provider: ../provider\n"})
	if code, out := kisflowTest(t, bin, caller); code != ExitOK {
		t.Fatalf("with the provider's folder: exit %d:\n%s", code, out)
	}
	writeFiles(t, dir, map[string]string{"caller/price_test.yml": strings.Replace(test, "price: 10", "price: 11", 1) + "mocks:\n  pricing:\n    provider: ../provider\n"})
	if code, out := kisflowTest(t, bin, caller); code != ExitProblem || !strings.Contains(out, "price") {
		t.Fatalf("a wrong expectation: exit %d, want 1 with a diff:\n%s", code, out)
	}
}
