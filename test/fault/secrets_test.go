package fault

import (
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// closedPort returns a local TCP port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return port
}

// secretCase is a connector with a planted secret that cannot work: a
// closed port, bad credentials on the real service, or an address that
// does not parse.
type secretCase struct {
	name   string
	conn   func(port int, secret string) string // the connector "src", its YAML body after cname
	global func(port int, secret string) string // optional: the plugins of the global file
	env    string                               // optional: NAME, set to the secret, referenced by the YAML
	// pending names the fix this case waits for; it is skipped until then.
	pending string
	// reports is what the output must mention, proof that the failure was
	// printed (default: the connector's name, "src" in quotes).
	reports string
}

var secretCases = []secretCase{
	{name: "redis url", conn: func(p int, s string) string {
		return fmt.Sprintf("type: redis\naddrs: redis://app:%s@127.0.0.1:%d/0\nkey: k\nparams:\n  mode: stream\n", s, p)
	}},
	{name: "nats user and password", conn: func(p int, s string) string {
		return fmt.Sprintf("type: nats\naddrs: nats://alice:%s@127.0.0.1:%d\nkey: k.x\nparams:\n  stream: k\n", s, p)
	}},
	{name: "nats token", conn: func(p int, s string) string {
		return fmt.Sprintf("type: nats\naddrs: nats://%s@127.0.0.1:%d,nats://127.0.0.1:%d\nkey: k.x\nparams:\n  stream: k\n", s, p, p)
	}},
	{name: "nats token param", conn: func(p int, s string) string {
		return fmt.Sprintf("type: nats\naddrs: nats://127.0.0.1:%d\nkey: k.x\nparams:\n  stream: k\n  token: %s\n", p, s)
	}},
	{name: "kafka sasl", env: "KISFLOW_FAULT_KAFKA_SASL_PASSWORD", conn: func(p int, s string) string {
		return fmt.Sprintf("type: kafka\naddrs: 127.0.0.1:%d\nkey: k\nparams:\n  sasl_mechanism: SCRAM-SHA-256\n  sasl_user: svc\n"+
			"  sasl_password: ${KISFLOW_FAULT_KAFKA_SASL_PASSWORD}\n  client_log: debug\n  timeout: 1s\n", p)
	}},
	{name: "rabbitmq bad password", conn: func(_ int, s string) string {
		return "type: rabbitmq\naddrs: amqp://guest:" + s + "@127.0.0.1:5672/\nkey: k\n"
	}},
	{name: "rabbitmq bad port", conn: func(_ int, s string) string {
		return "type: rabbitmq\naddrs: amqp://guest:" + s + "@127.0.0.1:badport/\nkey: k\n"
	}},
	{name: "mqtt", conn: func(p int, s string) string {
		return fmt.Sprintf("type: mqtt\naddrs: tcp://user:%s@127.0.0.1:%d\nkey: k/x\nparams:\n  client_id: c1\n", s, p)
	}},
	{name: "mqtt ssl", conn: func(p int, s string) string {
		return fmt.Sprintf("type: mqtt\naddrs: ssl://user:%s@127.0.0.1:%d\nkey: k/x\n", s, p)
	}},
	{name: "postgres url", conn: func(p int, s string) string {
		return fmt.Sprintf("type: postgres\nkey: t\nparams:\n  dsn: postgres://postgres:%s@127.0.0.1:%d/test?sslmode=disable\n  poll_column: id\n", s, p)
	}},
	{name: "postgres keywords", conn: func(p int, s string) string {
		return fmt.Sprintf("type: postgres\nkey: t\nparams:\n  dsn: host=127.0.0.1 port=%d user=postgres password=%s dbname=test\n  poll_column: id\n", p, s)
	}},
	{name: "mysql bad password", env: "KISFLOW_FAULT_MYSQL_PASSWORD", conn: func(int, string) string {
		return "type: mysql\nkey: t\nparams:\n  dsn: root:${KISFLOW_FAULT_MYSQL_PASSWORD}@tcp(127.0.0.1:3306)/test\n  poll_column: id\n"
	}},
	{name: "mysql closed port", conn: func(p int, s string) string {
		return fmt.Sprintf("type: mysql\nkey: t\nparams:\n  dsn: root:%s@tcp(127.0.0.1:%d)/test\n  poll_column: id\n", s, p)
	}},
	{name: "http listen address", conn: func(_ int, s string) string {
		return "type: http\naddrs: user:" + s + "@127.0.0.1:0\n"
	}},
	{name: "tracing headers", conn: func(p int, _ string) string {
		return fmt.Sprintf("type: nats\naddrs: nats://127.0.0.1:%d\nkey: k.x\nparams:\n  stream: k\n", p)
	}, global: func(p int, s string) string {
		return fmt.Sprintf("  tracing:\n    main:\n      endpoint: 127.0.0.1:%d\n      insecure: true\n      headers:\n"+
			"        Authorization: Bearer %s\n        X-Api-Key: k%s\n", p, s, s)
	}},
	{name: "tracing endpoint", conn: func(p int, _ string) string {
		return fmt.Sprintf("type: nats\naddrs: nats://127.0.0.1:%d\nkey: k.x\nparams:\n  stream: k\n", p)
	}, global: func(_ int, s string) string {
		return "  tracing:\n    main:\n      endpoint: tracer:" + s + "@127.0.0.1:4318\n"
	}, reports: `endpoint "tracer:xxxxx@127.0.0.1:4318"`},
}

// TestSecretsNeverPrinted plants a password, token or key of its own in
// every kind of address and parameter, in a connector that cannot work,
// and runs lint, graph, echo, dry-run and run (as the source, and as the sink of a file)
// with debug logs to stderr and to a log file. No output, log or
// dead-letter file may hold the secret.
func TestSecretsNeverPrinted(t *testing.T) {
	// How long a run may take to meet its failure and report it before
	// it is stopped (RabbitMQ answers a bad password after about 3 s).
	runFor := 6 * time.Second
	if raceEnabled {
		runFor = 15 * time.Second
	}
	t.Parallel()
	for i, tc := range secretCases {
		for _, role := range []string{"source", "sink"} {
			t.Run(tc.name+"/"+role, func(t *testing.T) {
				t.Parallel()
				if testing.Short() && role == "sink" {
					t.Skip("-short: the source role only")
				}
				if tc.pending != "" {
					t.Skip(tc.pending)
				}
				secret := fmt.Sprintf("Pl4nted%02d%sQz", i, role[:2])
				port := closedPort(t)
				conn := tc.conn(port, secret)
				var env []string
				if tc.env != "" {
					env = append(env, tc.env+"="+secret)
				}
				dir := t.TempDir()
				global := "kistype: global\nplugins:\n  log:\n    main:\n      level: debug\n      output: " + filepath.Join(dir, "kisflow.log") + "\n"
				if tc.global != nil {
					global += tc.global(port, secret)
				}
				stream := "  source: src\n  sink: out\n"
				if role == "sink" {
					stream = "  source: rows\n  sink: src\n  retry_times: 1\n  retry_duration: 10\n"
				}
				for name, data := range map[string]string{
					"rows.jsonl": IDLines(5, func(i int) string { return fmt.Sprintf(`{"id":%d}`, i) }),
					"global.yml": global,
					"conns.yml": "kistype: conn\ncname: src\n" + conn +
						"---\nkistype: conn\ncname: out\ntype: discard\n" +
						"---\nkistype: conn\ncname: rows\ntype: file\nparams:\n  path: rows.jsonl\n",
					"flow.yml": "kistype: flow\nstatus: 1\nflow_name: Leak\nflows:\n  - fname: Mark\nstream:\n" + stream +
						"---\nkistype: func\nfname: Mark\nfmode: Calculate\ncalc:\n  seen: 'true'\n",
				} {
					if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
						t.Fatal(err)
					}
				}

				var outputs []string
				for _, args := range [][]string{{"lint", dir}, {"graph", dir}, {"echo", dir}, {"dry-run", dir, "--timeout", "20s"}} {
					p := Start(t, dir, env, args...)
					p.Wait(time.Minute)
					outputs = append(outputs, strings.Join(args[:1], " ")+": "+p.Output())
				}
				p := Start(t, dir, env, "run", dir, "--state", filepath.Join(dir, "state"), "--log-level", "debug", "--progress", "never")
				// A source that cannot be reached may be retried for as long
				// as it takes: give it a few seconds, then stop it.
				select {
				case <-p.Done():
				case <-time.After(runFor):
					p.Signal(syscall.SIGINT)
					select {
					case <-p.Done():
					case <-time.After(20 * time.Second):
						p.Kill()
					}
				}
				run := p.Output()
				outputs = append(outputs, "run: "+run)
				err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
					if err != nil || d.IsDir() || strings.HasSuffix(path, ".yml") {
						return err
					}
					data, err := os.ReadFile(path)
					outputs = append(outputs, path+": "+string(data))
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
				for _, out := range outputs {
					if strings.Contains(out, secret) {
						t.Errorf("the secret %s is printed:\n%s", secret, out)
					}
				}
				// The failure was reported, with the secret redacted.
				want := tc.reports
				if want == "" {
					want = `"src"`
				}
				if all := strings.Join(outputs, "\n"); !strings.Contains(all, want) {
					t.Errorf("no output mentions %s:\n%s", want, all)
				}
			})
		}
	}
}
