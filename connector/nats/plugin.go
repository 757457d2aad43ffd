package nats

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/plugin"
)

// PluginType is the plugin type of a shared NATS connection, configured in
// the global file under plugins.nats.<name> and used by connectors whose
// params say `client: <name>`: one connection (and its reconnect loop) for
// every stream of a process instead of one per connector.
const PluginType = "nats"

// ClientConfig is the config of a shared connection (${VAR} expands, as in
// every plugin config).
type ClientConfig struct {
	URL      string        `yaml:"url" doc:"comma-separated server URLs"`
	User     string        `yaml:"user" doc:"user name"`
	Password string        `yaml:"password" doc:"password (use ${VAR}; never printed)"`
	Token    string        `yaml:"token" doc:"an auth token"`
	Creds    string        `yaml:"creds" doc:"a credentials file"`
	Timeout  time.Duration `yaml:"timeout" doc:"connect timeout"`
	TLS      bool          `yaml:"tls" doc:"connect with TLS"`
}

// Validate checks the values.
func (c *ClientConfig) Validate() error {
	if c.Timeout <= 0 {
		return fmt.Errorf("timeout must be > 0")
	}
	return nil
}

// ClientPlugin is a NATS connection shared by the connectors that name it.
type ClientPlugin struct {
	url  string
	opts []natsgo.Option
	nc   *natsgo.Conn
}

// PluginSpec is the plugin type of shared connections; Install registers it.
var PluginSpec = plugin.Spec{Type: PluginType, Summary: "a NATS connection shared by the connectors whose param client names it",
	Config: &ClientConfig{URL: natsgo.DefaultURL, Timeout: 5 * time.Second}, New: newClientPlugin}

func newClientPlugin(name string, pc *config.PluginConfig) (plugin.Plugin, error) {
	c := ClientConfig{URL: natsgo.DefaultURL, Timeout: 5 * time.Second}
	if err := pc.Decode(&c); err != nil {
		return nil, err
	}
	opts := []natsgo.Option{natsgo.Name("kisflow-" + name), natsgo.Timeout(c.Timeout), natsgo.MaxReconnects(-1), natsgo.ReconnectWait(250 * time.Millisecond)}
	opts = append(opts, authOptions(c.Creds, c.Token, c.User, c.Password)...)
	if c.TLS {
		opts = append(opts, natsgo.Secure(&tls.Config{MinVersion: tls.VersionTLS12}))
	}
	return &ClientPlugin{url: c.URL, opts: opts}, nil
}

// authOptions picks one way to authenticate: credentials file, token, or
// user and password.
func authOptions(creds, token, user, password string) []natsgo.Option {
	switch {
	case creds != "":
		return []natsgo.Option{natsgo.UserCredentials(creds)}
	case token != "":
		return []natsgo.Option{natsgo.Token(token)}
	case user != "":
		return []natsgo.Option{natsgo.UserInfo(user, password)}
	}
	return nil
}

// Start connects.
func (p *ClientPlugin) Start(context.Context, plugin.Host) error {
	nc, err := natsgo.Connect(p.url, p.opts...)
	if err != nil {
		return config.RedactError(fmt.Errorf("nats %s: %w", config.Redact(p.url), err))
	}
	p.nc = nc
	return nil
}

// Conn returns the shared connection.
func (p *ClientPlugin) Conn() *natsgo.Conn { return p.nc }

// Close flushes what is buffered and closes the connection, after every
// connector using it closed.
func (p *ClientPlugin) Close(ctx context.Context) error {
	if p.nc == nil {
		return nil
	}
	defer p.nc.Close()
	if !p.nc.IsConnected() {
		return nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	return p.nc.FlushWithContext(ctx)
}

// UsePlugins takes the shared connection named by the `client` param.
func (n *NATS) UsePlugins(lookup func(typ, name string) (plugin.Plugin, bool)) error {
	name := n.client
	if name == "" {
		return nil
	}
	cp, err := plugin.Find[*ClientPlugin](lookup, PluginType, name)
	if err != nil {
		return fmt.Errorf("nats connector %q: client %q: %w", n.cfg.CName, name, err)
	}
	n.shared = cp
	return nil
}
