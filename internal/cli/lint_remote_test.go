package cli

import (
	"path/filepath"
	"strings"
	"testing"
)

// remotePriceYAML is the YAML of a remote connector pricing with the
// addrs line given (or none) and params service: pricing and then the
// params lines given, a function Price through it, and a flow Orders of
// Price alone.
func remotePriceYAML(addrs, params string) string {
	return "kistype: conn\ncname: pricing\ntype: remote\n" + addrs + "params:\n  service: pricing\n" + params +
		"---\nkistype: func\nfname: Price\nfmode: Calculate\noption:\n  cname: pricing\n---\nkistype: flow\nstatus: 1\nflow_name: Orders\nflows:\n  - fname: Price\n"
}

// TestLintRemoteConnector: a remote connector's bad params and addrs are
// lint errors at their line, whatever flow runs the step (a remote step
// has no body to run instead); retries above the cap is a warning.
func TestLintRemoteConnector(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, addrs, param string
		code               int
		want               string
	}{
		{"registry", "", "registry: natss", ExitProblem, `conf.yml:7: connector "pricing" (type remote): param registry: "natss" is not one of`},
		{"cluster", "", "cluster: failovr", ExitProblem, `conf.yml:7: connector "pricing" (type remote): param cluster:`},
		{"loadbalance", "", "loadbalance: roundrobin", ExitProblem, `conf.yml:7: connector "pricing" (type remote): param loadbalance:`},
		{"retries", "", "retries: -1", ExitProblem, `conf.yml:7: connector "pricing" (type remote): param retries: "-1" is below the minimum 0`},
		{"timeout", "", "timeout: 2", ExitProblem, `conf.yml:7: connector "pricing" (type remote): param timeout: "2" has no unit`},
		{"forks", "", "forks: 0", ExitProblem, `conf.yml:7: connector "pricing" (type remote): param forks: "0" is below the minimum 1`},
		{"typo", "", "servce: pricing", ExitProblem, `conf.yml:7: connector "pricing" (type remote): param servce: unknown param (did you mean service?)`},
		{"retries capped", "", "retries: 20", ExitOK, `conf.yml:7: warning: connector "pricing" (type remote): param retries: 20 is above the maximum 10: 10 is used`},
		{"static addrs", "addrs: 127.0.0.1:19151;abc,localhost\n", "registry: static", ExitProblem,
			`conf.yml:4: connector "pricing": addrs: static provider "127.0.0.1:19151;abc": the weight after ';' must be a whole number of at least 1; static provider "localhost": want host:port (a port is required)`},
		{"static port", "addrs: localhost:99999,127.0.0.1:0\n", "registry: static", ExitProblem,
			`conf.yml:4: connector "pricing": addrs: static provider "localhost:99999": port "99999" is not a port number (1 to 65535); static provider "127.0.0.1:0": port "0" is not`},
		{"nats addrs", "addrs: nats://127.0.0.1:99999\n", "registry: nats", ExitProblem,
			`conf.yml:4: connector "pricing": addrs: NATS server "nats://127.0.0.1:99999": port "99999" is not a port number (1 to 65535)`},
		{"nats scheme", "addrs: http://127.0.0.1:4222\n", "registry: nats", ExitProblem,
			`conf.yml:4: connector "pricing": addrs: NATS server "http://127.0.0.1:4222": want nats://host[:port] (port 4222 when not given)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"conf.yml": remotePriceYAML(tc.addrs, "  bucket: kisflow_remote\n  "+tc.param+"\n") + `stream:
  source: in
  sink: out
---
kistype: conn
cname: in
type: file
params:
  path: in.jsonl
---
kistype: conn
cname: out
type: file
params:
  path: out.jsonl
`})
			code, out, stderr := run(t, "lint", dir)
			out = strings.ReplaceAll(out+stderr, dir+string(filepath.Separator), "")
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Fatalf("lint exit %d, want %d with %q:\n%s", code, tc.code, tc.want, out)
			}
			if tc.code == ExitOK && strings.Contains(out, "Go body") {
				t.Fatalf("lint says the remote connector may be unused:\n%s", out)
			}
		})
	}
}

// TestLintRemoteHashField: a consistent_hash field that the rows reaching
// the remote step are known not to carry is a warning at its line.
func TestLintRemoteHashField(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"conf.yml": `kistype: conn
cname: pricing
type: remote
params:
  service: pricing
  loadbalance: consistent_hash
  hash_field: usr_id
---
kistype: func
fname: Price
fmode: Calculate
source:
  must: [user_id, amount]
option:
  cname: pricing
`})
	code, out, stderr := run(t, "lint", dir)
	out = strings.ReplaceAll(out+stderr, dir+string(filepath.Separator), "")
	want := `conf.yml:7: warning: connector "pricing": hash_field "usr_id" (did you mean user_id?): the rows reaching function "Price" carry only amount, user_id, so every row would go to one provider`
	if code != ExitOK || !strings.Contains(out, want) {
		t.Fatalf("lint exit %d, want 0 with %q:\n%s", code, want, out)
	}
}
