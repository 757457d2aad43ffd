package cli

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kisflow-go/kisflow/config"
)

// echoFiles is a configuration with secrets in every form Redact and the
// Redactor know, some behind ${VAR}, and a stream block that sets only
// some of its fields.
func echoFiles(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"flows.yml": "kistype: flow\nstatus: 1\nflow_name: Orders\nflows:\n  - fname: Mark\nstream:\n  source: in\n  sink: db\n  workers: 4\n" +
			"---\nkistype: flow\nstatus: 1\nflow_name: Audit\nflows:\n  - fname: Keep\n    params:\n      note: hello\nstream:\n  source: bus\n  delivery: at-most-once\n",
		"funcs.yml": "kistype: func\nfname: Mark\nfmode: Calculate\ncalc:\n  seen: 'true'\n" +
			"---\nkistype: func\nfname: Keep\nfmode: Verify\nfilter: 'true'\n",
		"conns.yml": "kistype: conn\ncname: in\ntype: redis\naddrs: ${ECHO_TEST_REDIS_URL}\nkey: orders\nparams:\n  mode: stream\n  password: ${ECHO_TEST_REDIS_PASSWORD}\n" +
			"---\nkistype: conn\ncname: db\ntype: postgres\nkey: t\nparams:\n  dsn: host=${ECHO_TEST_PG_HOST:-127.0.0.1} port=5432 user=app password=Pl4ntedKeyword dbname=test\n" +
			"---\nkistype: conn\ncname: bus\ntype: nats\naddrs: nats://Pl4ntedToken@127.0.0.1:4222\nkey: audit.in\nparams:\n  stream: AUDIT\n" +
			"---\nkistype: conn\ncname: spare\ntype: mysql\nkey: t\nparams:\n  dsn: root:Pl4ntedMySQL@tcp(127.0.0.1:3306)/test\n",
		"global.yml": "kistype: global\nplugins:\n  tracing:\n    main:\n      endpoint: 127.0.0.1:4318\n      insecure: true\n      headers:\n        Authorization: Bearer ${ECHO_TEST_TRACE_TOKEN}\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

var echoSecrets = []string{"Pl4ntedURL", "Pl4ntedRedisPw", "Pl4ntedKeyword", "Pl4ntedToken", "Pl4ntedMySQL", "Pl4ntedTrace"}

func TestEcho(t *testing.T) {
	t.Setenv("ECHO_TEST_REDIS_URL", "redis://app:Pl4ntedURL@127.0.0.1:6390/0")
	t.Setenv("ECHO_TEST_REDIS_PASSWORD", "Pl4ntedRedisPw")
	t.Setenv("ECHO_TEST_TRACE_TOKEN", "Pl4ntedTrace")
	dir := echoFiles(t)

	code, out, stderr := run(t, "echo", dir)
	if code != ExitOK {
		t.Fatalf("exit %d\n%s\n%s", code, out, stderr)
	}
	for _, s := range echoSecrets {
		if strings.Contains(out+stderr, s) {
			t.Errorf("echo prints the secret %s:\n%s", s, out)
		}
	}
	for _, want := range []string{
		// ${VAR} expanded, the secret in it masked; ${VAR:-default} too.
		"addrs: redis://app:xxxxx@127.0.0.1:6390/0", "password: xxxxx", "host=127.0.0.1 port=5432 user=app password=xxxxx dbname=test",
		"nats://xxxxx@127.0.0.1:4222", "root:xxxxx@tcp(127.0.0.1:3306)/test", "Authorization: xxxxx",
		// The stream defaults a job uses, and the values given.
		"  workers: 4\n", "  max_in_flight: 9\n", "  batch_size: 1000\n", "  linger: 20ms\n", "  delivery: at-least-once\n",
		"  delivery: at-most-once\n", "  retry_times: 3\n", "  retry_duration: 100\n", "  drain_timeout: 30s\n", "  max_consecutive_failures: 100\n",
		// The defaults of the params a connector type declares.
		"  claim_idle: 30s\n", "  field: data\n", "  sslmode: prefer\n", "  max_conns: \"8\"\n",
		// Where each document was read.
		"# " + filepath.Join(dir, "conns.yml") + ":1\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("echo lacks %q:\n%s", want, out)
		}
	}
	// Flows, functions, connectors by name, then the global document.
	order := regexp.MustCompile(`(?m)^(flow_name|fname|cname): (\S+)$|^kistype: global$`).FindAllString(out, -1)
	wantOrder := []string{"flow_name: Audit", "flow_name: Orders", "fname: Keep", "fname: Mark", "cname: bus", "cname: db", "cname: in", "cname: spare", "kistype: global"}
	if strings.Join(order, "|") != strings.Join(wantOrder, "|") {
		t.Errorf("documents in the order %v, want %v", order, wantOrder)
	}
	for range 3 {
		if _, again, _ := run(t, "echo", dir); again != out {
			t.Fatalf("a second echo differs:\n%s\n---- first:\n%s", again, out)
		}
	}
	// What echo prints is KisFlow YAML that lint accepts.
	back := t.TempDir()
	if err := os.WriteFile(filepath.Join(back, "echo.yml"), []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Import(back); err != nil {
		t.Errorf("echo's output does not import: %v\n%s", err, out)
	}
	if code, lint, _ := run(t, "lint", back); code != ExitOK {
		t.Errorf("lint of echo's output: exit %d\n%s", code, lint)
	}

	// --flow: that flow and what it uses, and the global document.
	code, out, stderr = run(t, "echo", dir, "--flow", "Audit")
	if code != ExitOK {
		t.Fatalf("--flow: exit %d\n%s", code, stderr)
	}
	order = regexp.MustCompile(`(?m)^(flow_name|fname|cname): (\S+)$|^kistype: global$`).FindAllString(out, -1)
	if got := strings.Join(order, "|"); got != "flow_name: Audit|fname: Keep|cname: bus|kistype: global" {
		t.Errorf("--flow Audit prints %s:\n%s", got, out)
	}
	if code, _, stderr := run(t, "echo", dir, "--flow", "Nope"); code != ExitUsage || !strings.Contains(stderr, `no flow "Nope"`) {
		t.Errorf("unknown --flow: exit %d, %s", code, stderr)
	}
}

// TestEchoSourceBatchSize: echo fills in a CDC flow's batch_size with
// the CDC sources' default, and keeps one the flow sets.
func TestEchoSourceBatchSize(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cdc := func(name string) string {
		return "kistype: conn\ncname: " + name + "\ntype: postgres_cdc\naddrs: postgres://u@127.0.0.1:5432/test\nkey: src\nparams:\n  slot: " + name + "\n  publication: p\n"
	}
	body := "kistype: flow\nstatus: 1\nflow_name: Default\nflows:\n  - fname: F\nstream:\n  source: cdc1\n  sink: out\n" +
		"---\nkistype: flow\nstatus: 1\nflow_name: Set\nflows:\n  - fname: F\nstream:\n  source: cdc2\n  sink: out\n  batch_size: 250\n" +
		"---\nkistype: func\nfname: F\nfmode: Calculate\ncalc:\n  x: 1\n---\n" + cdc("cdc1") + "---\n" + cdc("cdc2") + "---\nkistype: conn\ncname: out\ntype: discard\n"
	if err := os.WriteFile(filepath.Join(dir, "all.yml"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	for flow, want := range map[string]string{"Default": "  batch_size: 5000\n", "Set": "  batch_size: 250\n"} {
		code, out, stderr := run(t, "echo", dir, "--flow", flow)
		if code != ExitOK {
			t.Fatalf("exit %d\n%s\n%s", code, out, stderr)
		}
		if !strings.Contains(out, want) {
			t.Errorf("echo of flow %s lacks %q:\n%s", flow, want, out)
		}
	}
}

// TestLintErrorsStopCommands checks that run, dry-run and echo refuse a
// folder with lint errors: exit 2, with every error lint reports printed
// as file:line: message.
func TestLintErrorsStopCommands(t *testing.T) {
	t.Parallel()
	dir := "../../config/testdata/bad"
	code, out, _ := run(t, "lint", dir)
	if code != ExitProblem {
		t.Fatalf("lint: exit %d", code)
	}
	var errs []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.Contains(l, ": warning: ") {
			errs = append(errs, l)
		}
	}
	if len(errs) < 8 {
		t.Fatalf("only %d lint errors:\n%s", len(errs), out)
	}
	pos := regexp.MustCompile(`^\S+\.ya?ml:\d+: `)
	for _, e := range errs {
		if !pos.MatchString(e) {
			t.Errorf("lint error without file:line: %s", e)
		}
	}
	for _, cmd := range []string{"run", "dry-run", "echo"} {
		t.Run(cmd, func(t *testing.T) {
			t.Parallel()
			code, out, stderr := run(t, cmd, dir, "--flow", "Disabled")
			if code != ExitUsage {
				t.Fatalf("exit %d, want %d\n%s\n%s", code, ExitUsage, out, stderr)
			}
			if out != "" {
				t.Errorf("printed on stdout:\n%s", out)
			}
			for _, e := range errs {
				if !strings.Contains(stderr, e) {
					t.Errorf("stderr lacks the lint error %q:\n%s", e, stderr)
				}
			}
		})
	}
}
