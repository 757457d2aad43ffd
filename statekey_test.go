package kisflow_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
)

// A state key names the flow and its source: type, addresses without
// secrets, DSN, absolute path, key; a generator by its folder and name.
// Changing a password keeps it; a long one is cut with a hash of the whole.
func TestStateKey(t *testing.T) {
	t.Parallel()
	cwd, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("k", 300)
	for _, c := range []struct {
		name string
		conn *config.Conn
		want string
	}{
		{"no source", nil, "F"},
		{"redis", &config.Conn{CName: "r", Type: "redis", Addrs: "127.0.0.1:6379", Key: "orders"}, "F@redis:127.0.0.1:6379/orders"},
		{"password in a URL", &config.Conn{CName: "q", Type: "rabbitmq", Addrs: "amqp://guest:s3cret-pw@127.0.0.1:5672/", Key: "q1"},
			"F@rabbitmq:amqp://guest:xxxxx@127.0.0.1:5672//q1"},
		{"password in a MySQL DSN", &config.Conn{CName: "m", Type: "mysql", Key: "t", Params: map[string]string{"dsn": "root:s3cret-pw@tcp(127.0.0.1:3306)/test"}},
			"F@mysql:dsn=root:xxxxx@tcp(127.0.0.1:3306)/test/t"},
		{"relative file", &config.Conn{CName: "f", Type: "file", Dir: "conf", Params: map[string]string{"path": "in.jsonl"}},
			"F@file:" + filepath.Join(cwd, "conf", "in.jsonl")},
		{"generator", &config.Conn{CName: "gen", Type: "generator", Dir: "conf", Params: map[string]string{"count": "10"}},
			"F@generator:" + filepath.Join(cwd, "conf") + "/gen"},
	} {
		if got := kisflow.StateKey("F", c.conn, nil); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
	a := kisflow.StateKey("F", &config.Conn{Type: "redis", Addrs: "redis://:old-password@host:6379", Key: "k"}, nil)
	b := kisflow.StateKey("F", &config.Conn{Type: "redis", Addrs: "redis://:new-password@host:6379", Key: "k"}, nil)
	if a != b || strings.Contains(a, "password") {
		t.Errorf("a password change changes the key or shows in it: %q, %q", a, b)
	}
	k1 := kisflow.StateKey("F", &config.Conn{Type: "redis", Addrs: "h", Key: long + "1"}, nil)
	k2 := kisflow.StateKey("F", &config.Conn{Type: "redis", Addrs: "h", Key: long + "2"}, nil)
	if len(k1) > 200 || k1 == k2 || !strings.HasPrefix(k1, "F@redis:h/kkk") {
		t.Errorf("long keys: %q (%d bytes), %q", k1, len(k1), k2)
	}
}

// identified is a source driver that names what it reads.
type identified struct{ id string }

func (identified) Start(context.Context) error { return nil }
func (identified) Close(context.Context) error { return nil }
func (d identified) Identity() string          { return d.id }

// A driver with an identity (driver.Identifier) is keyed by it instead of
// its config, so that a file keeps its key when its folder moves; without
// one (the folder does not exist yet) the key is made from the config.
func TestStateKeyUsesTheDriversIdentity(t *testing.T) {
	t.Parallel()
	conn := &config.Conn{CName: "f", Type: "file", Dir: "conf", Params: map[string]string{"path": "in.jsonl"}}
	if got, want := kisflow.StateKey("F", conn, identified{"dir=1:2/in.jsonl"}), "F@file:dir=1:2/in.jsonl"; got != want {
		t.Errorf("with an identity: %q, want %q", got, want)
	}
	if got, want := kisflow.StateKey("F", conn, identified{""}), kisflow.StateKey("F", conn, nil); got != want {
		t.Errorf("without one: %q, want the config's %q", got, want)
	}
	if got := kisflow.StateKey("F", conn, identified{strings.Repeat("x", 300)}); len(got) > 200 {
		t.Errorf("a long identity is not cut: %d bytes", len(got))
	}
}
