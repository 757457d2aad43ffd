package cli

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"text/template"

	"github.com/spf13/cobra"
)

//go:embed all:scaffold
var scaffold embed.FS

// modulePath is this module's path, which scaffolded projects require.
const modulePath = "github.com/kisflow-go/kisflow"

type newOptions struct {
	module  string
	replace string
	noTidy  bool
}

var projectName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]*$`)

func newCmd() *cobra.Command {
	o := newOptions{}
	cmd := &cobra.Command{
		Use:   "new NAME",
		Short: "Scaffold a KisFlow project in the folder NAME",
		Long: "Create the folder NAME with a Go module holding a main that registers\n" +
			"its functions, one function with its test, the flow's YAML under conf/\n" +
			"with a test of the flow (go run . test conf), sample data, a README and\n" +
			".ci/run; then run `go mod tidy` in it. The\n" +
			"project builds, passes its tests and runs (`go run . run conf`) at once.\n" +
			"Run from a kisflow checkout (or with --replace DIR), the project uses\n" +
			"that checkout through a replace directive; otherwise it requires this\n" +
			"binary's version of the module (a development build needs --replace).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return newProject(args[0], o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVar(&o.module, "module", "", "module path (default: the folder's name)")
	cmd.Flags().StringVar(&o.replace, "replace", "", "use the kisflow source in DIR (default: the checkout the current folder is in, if any)")
	cmd.Flags().BoolVar(&o.noTidy, "no-tidy", false, "do not run go mod tidy (run it yourself before the first go run)")
	return cmd
}

func newProject(dir string, o newOptions, stdout, stderr io.Writer) error {
	name := filepath.Base(filepath.Clean(dir))
	if !projectName.MatchString(name) {
		return &exitError{code: ExitUsage, err: fmt.Errorf("project name %q: use letters, digits, - and _, starting with a letter", name)}
	}
	if _, err := os.Stat(dir); err == nil {
		return &exitError{code: ExitUsage, err: fmt.Errorf("%s already exists", dir)}
	}
	module := o.module
	if module == "" {
		module = name
	}
	replace := o.replace
	if replace == "" {
		replace = findCheckout()
	}
	if replace != "" {
		abs, err := filepath.Abs(replace)
		if err != nil {
			return &exitError{code: ExitUsage, err: err}
		}
		if _, err := os.Stat(filepath.Join(abs, "go.mod")); err != nil {
			return &exitError{code: ExitUsage, err: fmt.Errorf("--replace %s: no go.mod there", replace)}
		}
		replace = abs
	}
	if v := Version(); replace == "" && !publishable(v) {
		return &exitError{code: ExitUsage, err: fmt.Errorf("this kisflow binary is a development build (version %s), so a new project cannot require it from the Go module proxy: "+
			"run `kisflow new %s --replace DIR` with DIR a clone of %s (git clone https://%s), or run it from inside that clone; "+
			"or install a published version (go install %s/cmd/kisflow@latest) once the module is published", v, dir, modulePath, modulePath, modulePath)}
	}
	data := struct{ Name, Module string }{name, module}
	err := fs.WalkDir(scaffold, "scaffold", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel := strings.TrimPrefix(p, "scaffold/")
		body, err := scaffold.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.HasSuffix(rel, ".tmpl") {
			rel = strings.TrimSuffix(rel, ".tmpl")
			t, err := template.New(rel).Delims("<<", ">>").Parse(string(body))
			if err != nil {
				return err
			}
			var b bytes.Buffer
			if err := t.Execute(&b, data); err != nil {
				return err
			}
			body = b.Bytes()
		}
		if rel == "gitignore" {
			rel = ".gitignore" // a dotfile in the module would be left out of it
		}
		dst := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		mode := fs.FileMode(0o644)
		if path.Base(rel) == "run" {
			mode = 0o755
		}
		return os.WriteFile(dst, body, mode)
	})
	if err != nil {
		return &exitError{code: ExitProblem, err: fmt.Errorf("write %s: %w", dir, err)}
	}
	gomod := fmt.Sprintf("module %s\n\ngo 1.26\n\nrequire %s %s\n", module, modulePath, requireVersion(replace))
	if replace != "" {
		gomod += fmt.Sprintf("\nreplace %s => %s\n", modulePath, replace)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644); err != nil {
		return &exitError{code: ExitProblem, err: err}
	}
	fmt.Fprintf(stdout, "created %s (module %s)\n", dir, module)
	if !o.noTidy {
		fmt.Fprintln(stdout, "running go mod tidy ...")
		tidy := exec.Command("go", "mod", "tidy")
		tidy.Dir, tidy.Stdout, tidy.Stderr = dir, stderr, stderr
		if err := tidy.Run(); err != nil {
			if replace == "" {
				return &exitError{code: ExitProblem, err: fmt.Errorf("go mod tidy in %s: %w: %s %s could not be downloaded (see go's message above: the module is not published on the Go module proxy, or not this version). "+
					"The project is written; point it at a clone of kisflow (git clone https://%s) and tidy it again: cd %s && go mod edit -replace %s=/path/to/the/clone && go mod tidy; "+
					"or delete %s and run kisflow new %s --replace /path/to/the/clone",
					dir, err, modulePath, requireVersion(replace), modulePath, dir, modulePath, dir, dir)}
			}
			return &exitError{code: ExitProblem, err: fmt.Errorf("go mod tidy in %s: %w (the project is written; fix and run it again)", dir, err)}
		}
	}
	tidyStep := ""
	if o.noTidy {
		tidyStep = "  go mod tidy   # --no-tidy: go.sum is not written yet\n"
	}
	fmt.Fprintf(stdout, "next:\n  cd %s\n%s  go run . run conf\n  go run . test conf\n  go test ./...\n", dir, tidyStep)
	return nil
}

// requireVersion is the kisflow version a new project requires: this
// binary's, or a placeholder that a replace directive stands in for.
func requireVersion(replace string) string {
	if v := Version(); publishable(v) && replace == "" {
		return v
	}
	return "v0.0.0-00010101000000-000000000000"
}

// publishable reports whether v is a version that the Go module proxy may
// serve: not a development build, not one with build metadata (a build
// from a modified tree is v...+dirty).
func publishable(v string) bool {
	return v != "devel" && !strings.Contains(v, "+")
}

// findCheckout returns the root of the kisflow checkout the current folder
// is in, or "".
func findCheckout() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil {
			if bytes.HasPrefix(bytes.TrimSpace(b), []byte("module "+modulePath+"\n")) {
				return dir
			}
			return ""
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return ""
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}
