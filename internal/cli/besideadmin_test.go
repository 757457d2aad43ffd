package cli

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
)

// TestPositionsAndDryRunBesideAnAdminServer: positions and dry-run of a
// folder whose global.yml has an admin server work while a run holds
// that address; they start no listener.
func TestPositionsAndDryRunBesideAnAdminServer(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"flow.yml":   "kistype: flow\nstatus: 1\nflow_name: F\nflows:\n  - fname: Keep\nstream: {source: in, sink: out}\n",
		"funcs.yml":  keepFunc,
		"conns.yml":  "kistype: conn\ncname: in\ntype: file\nparams: {path: in.jsonl}\n---\nkistype: conn\ncname: out\ntype: file\nparams: {path: out.jsonl}\n",
		"global.yml": "kistype: global\nplugins:\n  metrics:\n    admin: {listen: \"" + ln.Addr().String() + "\"}\n",
	})
	appendIDs(t, filepath.Join(dir, "in.jsonl"), 1, 3)
	if code, stdout, stderr := run(t, "positions", dir); code != 0 || !strings.Contains(stdout, "F") || strings.Contains(stderr, "address already in use") {
		t.Fatalf("positions beside a run's admin server: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, stderr := run(t, "dry-run", dir); code != 0 || strings.Contains(stderr, "address already in use") {
		t.Fatalf("dry-run beside a run's admin server: exit %d\n%s%s", code, stdout, stderr)
	}
}

// TestTestRunMatchingNoneNamesTheTests: --run matching none of the tests
// says so and lists them, instead of saying there is no test.
func TestTestRunMatchingNoneNamesTheTests(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"conf.yml": "kistype: func\nfname: Keep\nfmode: Calculate\ncalc: {x: x}\n",
		"a_test.yml": "kistype: test\nname: first\nfunc: Keep\ninput: [{x: 1}]\nexpect: {rows: [{x: 1}]}\n---\n" +
			"kistype: test\nname: second\nfunc: Keep\ninput: [{x: 2}]\nexpect: {rows: [{x: 2}]}\n",
	})
	code, stdout, stderr := run(t, "test", dir, "--run", "nomatch")
	if code != ExitUsage || strings.Contains(stderr, "no test to run") || !strings.Contains(stderr, `--run "nomatch" matched none of the 2 test(s)`) ||
		!strings.Contains(stderr, `"first"`) || !strings.Contains(stderr, `"second"`) {
		t.Fatalf("test --run nomatch: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, stderr := run(t, "test", dir, "--run", "second"); code != 0 {
		t.Fatalf("test --run second: exit %d\n%s%s", code, stdout, stderr)
	}
}
