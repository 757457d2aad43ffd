package config

import (
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"testing/fstest"
)

func TestRedact(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, in, want string }{
		{"redis password only", "redis://:S3cr3t@127.0.0.1:6380/0", "redis://:xxxxx@127.0.0.1:6380/0"},
		{"redis user and password", "rediss://app:S3cr3t@cache:6380", "rediss://app:xxxxx@cache:6380"},
		{"password with @", "redis://:p@ss@cache:6379", "redis://:xxxxx@cache:6379"},
		{"amqp", "amqp://guest:S3cr3t@127.0.0.1:5672/vhost", "amqp://guest:xxxxx@127.0.0.1:5672/vhost"},
		{"nats list", "nats://alice:S3cr3t@10.0.0.1:4222,nats://bob:Pw0rd@10.0.0.2:4222", "nats://alice:xxxxx@10.0.0.1:4222,nats://bob:xxxxx@10.0.0.2:4222"},
		{"nats token", "nats://T0ken@10.0.0.1", "nats://xxxxx@10.0.0.1"},
		{"user without a password", "postgres://postgres@127.0.0.1:5432/test: plugins.postgres.nosuch", "postgres://postgres@127.0.0.1:5432/test: plugins.postgres.nosuch"},
		{"mqtt tcp", "tcp://u:S3cr3t@127.0.0.1:1883", "tcp://u:xxxxx@127.0.0.1:1883"},
		{"mqtt ssl", "ssl://u:S3cr3t@broker:8883", "ssl://u:xxxxx@broker:8883"},
		{"postgres URL", "postgres://postgres:S3cr3t@127.0.0.1:5432/test?sslmode=disable", "postgres://postgres:xxxxx@127.0.0.1:5432/test?sslmode=disable"},
		{"postgres keyword DSN", "host=127.0.0.1 port=5433 user=postgres password=S3cr3t dbname=test", "host=127.0.0.1 port=5433 user=postgres password=xxxxx dbname=test"},
		{"postgres keyword with an escaped space", `host=h user=postgres password=S3\ cr3t dbname=test`, "host=h user=postgres password=xxxxx dbname=test"},
		{"postgres quoted keyword with an escaped quote", `password='S3\'cr3t' dbname=test`, "password='xxxxx' dbname=test"},
		{"postgres quoted keyword", "user=postgres password='S3 cr3t' dbname=test", "user=postgres password='xxxxx' dbname=test"},
		{"mysql DSN", "root:S3cr3t@tcp(127.0.0.1:3307)/test?parseTime=true", "root:xxxxx@tcp(127.0.0.1:3307)/test?parseTime=true"},
		{"mysql unix socket", "app:S3cr3t@unix(/run/mysqld.sock)/db", "app:xxxxx@unix(/run/mysqld.sock)/db"},
		{"kafka SASL URL", "kafka://svc:S3cr3t@broker:9092", "kafka://svc:xxxxx@broker:9092"},
		{"kafka SASL param", "sasl_user=svc sasl_password=S3cr3t", "sasl_user=svc sasl_password=xxxxx"},
		{"query token", "http://collector:4318/v1/traces?token=S3cr3t&x=1", "http://collector:4318/v1/traces?token=xxxxx&x=1"},
		{"http basic auth", "https://u:S3cr3t@otel.example:4318", "https://u:xxxxx@otel.example:4318"},
		{"bearer header", "Authorization: Bearer S3cr3t", "Authorization: Bearer xxxxx"},
		{"JSON", `{"user":"u","password":"S3cr3t"}`, `{"user":"u","password":"xxxxx"}`},
		{"Go map", "map[api_key:S3cr3t host:h]", "map[api_key:xxxxx host:h]"},
		{"url.Parse error", `parse "amqp://guest:S3cr3t@127.0.0.1:badport/": invalid port ":badport" after host`, `parse "amqp://guest:xxxxx@127.0.0.1:badport/": invalid port ":badport" after host`},
		{"slog text", `level=ERROR msg=failed err="dial redis://:S3cr3t@h:1: refused" token=S3cr3t`, `level=ERROR msg=failed err="dial redis://:xxxxx@h:1: refused" token=xxxxx`},
		{"no credentials", "tcp://127.0.0.1:1883", "tcp://127.0.0.1:1883"},
		{"mysql without password", "root@tcp(127.0.0.1:3306)/test", "root@tcp(127.0.0.1:3306)/test"},
		{"plain error", "dial tcp 127.0.0.1:3307: connect: connection refused", "dial tcp 127.0.0.1:3307: connect: connection refused"},
		{"server message", `password authentication failed for user "postgres"`, `password authentication failed for user "postgres"`},
		{"not a url", "not a url", "not a url"},
		{"mysql access denied", "Access denied for user 'root'@'localhost' (using password: YES)", "Access denied for user 'root'@'localhost' (using password: YES)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := Redact(tt.in)
			if got != tt.want {
				t.Fatalf("Redact(%q)\n = %q\nwant %q", tt.in, got, tt.want)
			}
			for _, secret := range []string{"S3cr3t", "S3 cr3t", "T0ken", "Pw0rd", "p@ss"} {
				if strings.Contains(got, secret) {
					t.Fatalf("Redact(%q) = %q still holds %q", tt.in, got, secret)
				}
			}
		})
	}
}

// secretsSet is a configuration with a secret of its own in every place a
// secret can be given.
var secretsSet = fstest.MapFS{
	"conns.yml": {Data: []byte(`kistype: conn
cname: pg
type: postgres
params:
  dsn: host=127.0.0.1 password=PGkw0rd dbname=test
---
kistype: conn
cname: pg2
type: postgres
params:
  dsn: host=127.0.0.1 password=Esc\ Pw5 dbname=test
---
kistype: conn
cname: my
type: mysql
params:
  dsn: "root:MYpw@x!@tcp(127.0.0.1:3307)/test"
---
kistype: conn
cname: bus
type: nats
addrs: nats://${KISFLOW_TEST_REDACT_NATS_TOKEN}@127.0.0.1:4222
params:
  password: ${KISFLOW_TEST_REDACT_PASSWORD}
  sasl_password: KafkaSasl1
`)},
	"global.yml": {Data: []byte(`kistype: global
plugins:
  tracing:
    main:
      endpoint: "tracer:TrPw42@otel:4318"
      headers:
        Authorization: Bearer TraceTok1
        X-Api-Key: ApiKey123
`)},
}

func TestSetRedactorKnowsEverySecret(t *testing.T) {
	// Sets environment variables: not parallel.
	t.Setenv("KISFLOW_TEST_REDACT_NATS_TOKEN", "NatsTok9")
	t.Setenv("KISFLOW_TEST_REDACT_PASSWORD", "EnvPw77")
	set, err := ImportFS(secretsSet, ".")
	if err != nil {
		t.Fatal(err)
	}
	r := set.Redactor()
	secrets := []string{"PGkw0rd", `Esc\ Pw5`, "Esc Pw5", "MYpw@x!", "NatsTok9", "EnvPw77", "KafkaSasl1", "TraceTok1", "ApiKey123", "TrPw42"}
	for _, s := range secrets {
		// Echoed bare, as a server or a library might: only the known
		// values can catch this.
		msg := "server said " + s + " is wrong; escaped " + url.QueryEscape(s)
		if got := r.Redact(msg); strings.Contains(got, s) || strings.Contains(got, url.QueryEscape(s)) {
			t.Errorf("Redact(%q) = %q", msg, got)
		}
	}

	var buf bytes.Buffer
	log := slog.New(r.Handler(slog.NewTextHandler(&buf, nil))).With("conn", "nats://NatsTok9@h")
	base := fs.ErrNotExist
	log.Error("start failed: EnvPw77", "err", r.Error(errors.New("dial: KafkaSasl1")), "password", "x", slog.Group("g", "dsn", "host=h password=PGkw0rd"), "any", []string{"TraceTok1"})
	for _, s := range append(secrets, "password=x ") {
		if strings.Contains(buf.String(), s) {
			t.Errorf("log holds %q: %s", s, buf.String())
		}
	}
	if !strings.Contains(buf.String(), "password=xxxxx") {
		t.Errorf("log lost the redacted attribute: %s", buf.String())
	}

	wrapped := r.Error(errors.Join(base, errors.New("user MYpw@x!")))
	if !errors.Is(wrapped, fs.ErrNotExist) || strings.Contains(wrapped.Error(), "MYpw") {
		t.Errorf("Error: %v (Is: %v)", wrapped, errors.Is(wrapped, fs.ErrNotExist))
	}
	var out bytes.Buffer
	if _, err := r.Writer(&out).Write([]byte("token ApiKey123\n")); err != nil || out.String() != "token xxxxx\n" {
		t.Errorf("Writer wrote %q, %v", out.String(), err)
	}
}
