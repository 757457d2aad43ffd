package cli

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kisflow-go/kisflow"
)

// A scaffolded project builds, passes its own tests and CI, and runs its
// flow at once.
func TestNewProjectBuildsTestsAndRuns(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	dir := filepath.Join(t.TempDir(), "shop")
	var out, errb bytes.Buffer
	if code := Main(kisflow.NewRegistry(), []string{"new", dir}, &out, &errb); code != ExitOK {
		t.Fatalf("kisflow new: exit %d\n%s%s", code, out.String(), errb.String())
	}
	for _, f := range []string{"main.go", "enrich.go", "enrich_test.go", "conf/flow.yml", "README.md", ".ci/run", ".gitignore", "go.sum"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("missing %s", f)
		}
	}
	ci := exec.Command("bash", ".ci/run")
	ci.Dir = dir
	b, err := ci.CombinedOutput()
	if err != nil {
		t.Fatalf("the project's .ci/run: %v\n%s", err, b)
	}
	if !strings.Contains(string(b), `{"id":1,"amount":100,"tax":20,"total":120}`) || !strings.Contains(string(b), "2 written") {
		t.Fatalf("the project's flow did not write the enriched orders:\n%s", b)
	}

	if code := Main(kisflow.NewRegistry(), []string{"new", dir}, &out, &errb); code != ExitUsage {
		t.Errorf("new over an existing folder: exit %d, want %d", code, ExitUsage)
	}
	if code := Main(kisflow.NewRegistry(), []string{"new", filepath.Join(t.TempDir(), "9lives")}, &out, &errb); code != ExitUsage {
		t.Errorf("bad project name: exit %d, want %d", code, ExitUsage)
	}
}
