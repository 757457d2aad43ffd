package fault

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The broker connectors' params are declared: lint names each bad param of
// a connector a stream uses at its line (a misspelt name with the closest
// declared one, a duration without a unit, a boolean other than true or
// false, a missing required param, a number below its minimum), warns about
// a former name, and never prints a password, even one given under its
// former name.
func TestLintChecksBrokerParams(t *testing.T) {
	t.Parallel()
	const secret = "BrokerPw9931"
	dir := Dir(t, map[string]string{"conns.yml": "kistype: conn\ncname: k\ntype: kafka\naddrs: 127.0.0.1:9092\nkey: t\nparams:\n" +
		"  sasl_mechanism: PLAIN\n  sasl_user: svc\n  sasl_password: " + secret + "\n  hearbeat: 3s\n  timeout: \"5\"\n" +
		"---\nkistype: conn\ncname: n\ntype: nats\nkey: a.b\nparams:\n  create: \"yes\"\n" +
		"---\nkistype: conn\ncname: r\ntype: rabbitmq\nkey: q\nparams:\n  exchang: x\n  prefetch: \"0\"\n" +
		"---\nkistype: conn\ncname: m\ntype: mqtt\nkey: a/b\nparams:\n  user: ann\n  password: " + secret + "\n  clientid: c\n",
		// Streams use them: their params are the drivers' alone.
		"flows.yml": "kistype: flow\nstatus: 1\nflow_name: KR\nflows: []\nstream:\n  source: k\n  sink: r\n" +
			"---\nkistype: flow\nstatus: 1\nflow_name: NM\nflows: []\nstream:\n  source: n\n  sink: m\n"})
	lint := Run(t, dir, 60*time.Second, "lint", dir)
	for _, want := range []string{
		`conns.yml:8: warning: connector "k" (type kafka): param sasl_user: sasl_user is now called user`,
		`conns.yml:9: warning: connector "k" (type kafka): param sasl_password (a secret): sasl_password is now called password`,
		`conns.yml:10: connector "k" (type kafka): param hearbeat: unknown param (did you mean heartbeat?)`,
		`conns.yml:11: connector "k" (type kafka): param timeout: "5" has no unit (want a duration such as 5s or 5ms)`,
		`conns.yml:18: connector "n" (type nats): param create: "yes" is not a boolean (want true or false)`,
		`connector "n" (type nats): param stream: required: the JetStream stream`,
		`conns.yml:25: connector "r" (type rabbitmq): param exchang: unknown param (did you mean exchange?)`,
		`conns.yml:26: connector "r" (type rabbitmq): param prefetch: "0" is below the minimum 1`,
		`conns.yml:35: connector "m" (type mqtt): param clientid: unknown param (did you mean client_id?)`,
	} {
		if !strings.Contains(lint.Stdout, want) {
			t.Errorf("lint lacks %q", want)
		}
	}
	if lint.Code != 1 || strings.Contains(lint.Stdout+lint.Stderr, secret) {
		t.Errorf("lint: exit %d, want 1, and the password never printed", lint.Code)
	}
	if t.Failed() {
		t.Logf("lint output:\n%s%s", lint.Stdout, lint.Stderr)
	}
}

// A misspelt key of a plugin config (pasword for a shared NATS
// connection's password) would connect without it: it is an error for lint
// and run, at its line, with the key it resembles, and nothing runs.
func TestMisspeltPluginKeyIsAnError(t *testing.T) {
	t.Parallel()
	dir := fileFlow(t, "", "")
	global := "kistype: global\nplugins:\n  nats:\n    main:\n      url: nats://127.0.0.1:4222\n      user: svc\n      pasword: Pw77\n"
	if err := os.WriteFile(filepath.Join(dir, "global.yml"), []byte(global), 0o644); err != nil {
		t.Fatal(err)
	}
	refusedByLintAndRun(t, dir, `global.yml:7: plugin nats.main: unknown field "pasword" (did you mean "password"?)`)
}

// refusedByLintAndRun checks that want ("FILE:LINE: message", which a
// warning would not match) is an error of lint (exit 1) and of run (exit
// 2), and that run wrote nothing to the folder's out.jsonl.
func refusedByLintAndRun(t *testing.T, dir, want string) {
	t.Helper()
	lint := Run(t, dir, 60*time.Second, "lint", dir)
	if lint.Code != 1 || !strings.Contains(lint.Stdout, want) {
		t.Errorf("lint: exit %d, want 1 with %q as an error:\n%s%s", lint.Code, want, lint.Stdout, lint.Stderr)
	}
	run := Run(t, dir, 60*time.Second, "run", dir, "--state", filepath.Join(dir, "state"), "--progress", "never")
	if run.Code != 2 || !strings.Contains(run.Stderr, want) {
		t.Errorf("run: exit %d, want 2 with %q:\n%s%s", run.Code, want, run.Stdout, run.Stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "out.jsonl")); err == nil {
		t.Error("run wrote the sink despite the error")
	}
}
