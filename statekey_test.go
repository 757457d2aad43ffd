package kisflow_test

import (
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
		if got := kisflow.StateKey("F", c.conn); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
	a := kisflow.StateKey("F", &config.Conn{Type: "redis", Addrs: "redis://:old-password@host:6379", Key: "k"})
	b := kisflow.StateKey("F", &config.Conn{Type: "redis", Addrs: "redis://:new-password@host:6379", Key: "k"})
	if a != b || strings.Contains(a, "password") {
		t.Errorf("a password change changes the key or shows in it: %q, %q", a, b)
	}
	k1 := kisflow.StateKey("F", &config.Conn{Type: "redis", Addrs: "h", Key: long + "1"})
	k2 := kisflow.StateKey("F", &config.Conn{Type: "redis", Addrs: "h", Key: long + "2"})
	if len(k1) > 200 || k1 == k2 || !strings.HasPrefix(k1, "F@redis:h/kkk") {
		t.Errorf("long keys: %q (%d bytes), %q", k1, len(k1), k2)
	}
}
