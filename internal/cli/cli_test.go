package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/connector/memory"
)

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	reg := kisflow.NewRegistry()
	if err := memory.Install(reg); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := Main(reg, args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestLint(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		dir      string
		code     int
		contains string
	}{
		{"valid folder", "../../examples/quickstart/conf", ExitOK, ""},
		{"every error", "../../config/testdata/bad", ExitProblem, `flow-unknown-func.yml:6: flow "Disabled" names unknown function "Missing"`},
		{"connector type unknown to this binary", "../../config/testdata/kisflow", ExitProblem, `conn-ConnName1.yml:4: connector "ConnName1": unknown type "redis"`},
		{"missing folder", "../../no/such/dir", ExitUsage, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, out, stderr := run(t, "lint", tt.dir)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, out, stderr)
			}
			if !strings.Contains(out, tt.contains) {
				t.Fatalf("stdout lacks %q:\n%s", tt.contains, out)
			}
			if tt.code == ExitProblem && len(strings.Split(strings.TrimSpace(out), "\n")) < 1 {
				t.Fatal("no problem lines")
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	if code, _, _ := run(t, "lint"); code != ExitUsage {
		t.Errorf("lint without DIR: exit %d", code)
	}
	if code, _, _ := run(t, "frobnicate"); code != ExitUsage {
		t.Errorf("unknown command: exit %d", code)
	}
	code, out, _ := run(t, "version")
	if code != ExitOK || !strings.HasPrefix(out, "kisflow ") {
		t.Errorf("version: exit %d, %q", code, out)
	}
}
