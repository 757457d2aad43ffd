package driver

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/config"
)

type testParams struct {
	Mode      string        `param:"mode" default:"hash" enum:"hash|string|stream" doc:"how rows are stored"`
	ClaimIdle time.Duration `param:"claim_idle" default:"30s" min:"1ms" doc:"idle time before a claim"`
	Timeout   time.Duration `param:"timeout" default:"5s" min:"1ms" doc:"every network call"`
	Count     int           `param:"count" default:"0" min:"0" doc:"rows"`
	TLS       bool          `param:"tls" default:"false" doc:"use TLS"`
	MaxBody   Size          `param:"max_body" default:"10MiB" min:"1KiB" doc:"largest body"`
	Columns   []string      `param:"columns" doc:"columns to write"`
	User      string        `param:"user" alias:"username" doc:"user name"`
	Table     string        `param:"table" required:"true" doc:"the table"`
	notAParam int
}

var testSpec = MustSpec[testParams]("test", "a test connector")

func TestDecodeFillsDefaultsAndParsesEveryKind(t *testing.T) {
	var p testParams
	err := testSpec.Decode(&config.Conn{CName: "c", Params: map[string]string{
		"mode": "stream", "timeout": "250ms", "count": "7", "tls": "true", "max_body": "64KiB",
		"columns": "a, b,,c", "username": "ann", "table": "t",
	}}, &p)
	if err != nil {
		t.Fatal(err)
	}
	want := testParams{Mode: "stream", ClaimIdle: 30 * time.Second, Timeout: 250 * time.Millisecond, Count: 7, TLS: true,
		MaxBody: 64 << 10, User: "ann", Table: "t"}
	if p.Mode != want.Mode || p.ClaimIdle != want.ClaimIdle || p.Timeout != want.Timeout || p.Count != want.Count ||
		p.TLS != want.TLS || p.MaxBody != want.MaxBody || p.User != want.User || p.Table != want.Table ||
		strings.Join(p.Columns, "/") != "a/b/c" {
		t.Fatalf("decoded %+v", p)
	}
}

// The issue's Redis case: mode hsh, claim_idel, timeout 5 each named, with
// the closest declared name or word.
func TestCheckNamesEveryProblem(t *testing.T) {
	errs := testSpec.Check(map[string]string{"mode": "hsh", "claim_idel": "1s", "timeout": "5", "tls": "yes", "max_body": "12", "count": "-1"})
	got := errs.Error()
	for _, want := range []string{
		`param claim_idel: unknown param (did you mean claim_idle?)`,
		`param mode: "hsh" is not one of hash, string, stream (did you mean hash?)`,
		`param timeout: "5" has no unit (want a duration such as 5s or 5ms)`,
		`param tls: "yes" is not a boolean (want true or false)`,
		`param max_body: "12" is below the minimum 1KiB`,
		`param count: "-1" is below the minimum 0`,
		`param table: required: the table`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
	if len(errs) != 7 {
		t.Errorf("%d problems, want 7: %s", len(errs), got)
	}
}

func TestAFormerNameIsAWarningAndTheNewNameWins(t *testing.T) {
	errs := testSpec.Check(map[string]string{"username": "old", "user": "new", "table": "t"})
	if len(errs) != 1 || !errs[0].Warning || errs[0].Param != "username" {
		t.Fatalf("problems: %v", errs)
	}
	var p testParams
	if err := testSpec.Decode(&config.Conn{Params: map[string]string{"username": "old", "user": "new", "table": "t"}}, &p); err != nil || p.User != "new" {
		t.Fatalf("user %q, err %v", p.User, err)
	}
}

func TestGrammar(t *testing.T) {
	for in, want := range map[string]Size{"512": 512, "64KiB": 64 << 10, "10MiB": 10 << 20, "1GB": 1e9, "2 MB": 2e6} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"1.5MiB", "-1", "ten", "10XB"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q): no error", bad)
		}
	}
	if d, err := ParseDuration("0"); err != nil || d != 0 {
		t.Errorf("ParseDuration(0) = %v, %v", d, err)
	}
	if _, err := ParseBool("True"); err == nil {
		t.Error("ParseBool(True): no error")
	}
	if got := Size(64 << 10).String(); got != "64KiB" {
		t.Errorf("Size.String = %s", got)
	}
}

func TestMalformedDeclarationsAreRefused(t *testing.T) {
	type noDoc struct {
		A int `param:"a"`
	}
	type badDefault struct {
		A time.Duration `param:"a" default:"5" doc:"x"`
	}
	type badType struct {
		A map[string]string `param:"a" doc:"x"`
	}
	if _, err := NewSpec[noDoc]("x", ""); err == nil {
		t.Error("a param without doc: no error")
	}
	if _, err := NewSpec[badDefault]("x", ""); err == nil {
		t.Error("a default that does not parse: no error")
	}
	if _, err := NewSpec[badType]("x", ""); err == nil {
		t.Error("an unsupported type: no error")
	}
}

func ExampleSpec_Decode() {
	type params struct {
		Timeout time.Duration `param:"timeout" default:"5s" min:"1ms" doc:"every network call"`
	}
	spec := MustSpec[params]("example", "an example connector")
	var p params
	err := spec.Decode(&config.Conn{CName: "in", Params: map[string]string{"timout": "2s"}}, &p)
	fmt.Println(err)
	// Output: example connector "in": param timout: unknown param (did you mean timeout?)
}

// Every error and lint line is redacted, and "password: WORD" reads as a
// secret's value: a problem of a secret-named param keeps its words.
func TestASecretNamedParamsProblemSurvivesRedaction(t *testing.T) {
	type params struct {
		Password string `param:"password" alias:"sasl_password" required:"true" secret:"true" doc:"the password"`
	}
	spec := MustSpec[params]("x", "")
	for in, want := range map[string]string{
		"":              "param password (a secret): required: the password",
		"sasl_password": "param sasl_password (a secret): sasl_password is now called password",
	} {
		params := map[string]string{}
		if in != "" {
			params[in] = "Pw1"
		}
		if got := config.Redact(spec.Check(params).Error()); got != want {
			t.Errorf("redacted %q, want %q", got, want)
		}
	}
}
