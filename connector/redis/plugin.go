package redis

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/plugin"
)

// PluginType is the plugin type of a shared Redis client, configured in the
// global file under plugins.redis.<name> and used by connectors whose
// params say `client: <name>`.
const PluginType = "redis"

// ClientConfig is the config of a shared client.
type ClientConfig struct {
	Addr     string        `yaml:"addr" doc:"host:port or a redis:// URL"`
	User     string        `yaml:"user" doc:"ACL user"`
	Username string        `yaml:"username" doc:"the former name of user, still read"`
	Password string        `yaml:"password" doc:"the password (use ${VAR}; never printed)"`
	DB       int           `yaml:"db" doc:"database number"`
	Timeout  time.Duration `yaml:"timeout" doc:"dial, read and write"`
	TLS      bool          `yaml:"tls" doc:"connect with TLS"`
}

// Validate checks the values.
func (c *ClientConfig) Validate() error {
	if c.DB < 0 || c.Timeout <= 0 {
		return fmt.Errorf("db must be >= 0 and timeout > 0")
	}
	return nil
}

// ClientPlugin is a Redis client shared by the connectors that name it.
type ClientPlugin struct {
	opts   *goredis.Options
	client *goredis.Client
}

// PluginSpec is the plugin type of shared clients; Install registers it.
var PluginSpec = plugin.Spec{Type: PluginType, Summary: "a Redis client shared by the connectors whose param client names it",
	Config: &ClientConfig{Addr: "127.0.0.1:6379", Timeout: 5 * time.Second}, New: newClientPlugin}

func newClientPlugin(_ string, pc *config.PluginConfig) (plugin.Plugin, error) {
	c := ClientConfig{Addr: "127.0.0.1:6379", Timeout: 5 * time.Second}
	if err := pc.Decode(&c); err != nil {
		return nil, err
	}
	if c.User == "" {
		c.User = c.Username
	}
	opts := &goredis.Options{Addr: c.Addr, Username: c.User, Password: c.Password,
		DB: c.DB, DialTimeout: c.Timeout, ReadTimeout: c.Timeout, WriteTimeout: c.Timeout}
	if strings.Contains(c.Addr, "://") {
		// Credentials leave the address, which errors and logs show.
		u, err := goredis.ParseURL(c.Addr)
		if err != nil {
			return nil, fmt.Errorf("addr %s: %w", config.RedactURLs(c.Addr), redactURLError(err))
		}
		opts.Addr, opts.TLSConfig = u.Addr, u.TLSConfig
		if opts.Username == "" {
			opts.Username = u.Username
		}
		if opts.Password == "" {
			opts.Password = u.Password
		}
		if opts.DB == 0 {
			opts.DB = u.DB
		}
	}
	if c.TLS {
		opts.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: strings.Split(opts.Addr, ":")[0]}
	}
	return &ClientPlugin{opts: opts}, nil
}

// Start connects and checks the server answers.
func (p *ClientPlugin) Start(ctx context.Context, _ plugin.Host) error {
	p.client = goredis.NewClient(p.opts)
	if err := p.client.Ping(ctx).Err(); err != nil {
		p.client.Close()
		return fmt.Errorf("redis %s: %w", p.opts.Addr, classify(err, false))
	}
	return nil
}

// Client returns the shared client.
func (p *ClientPlugin) Client() *goredis.Client { return p.client }

// Close disconnects, after every connector using the client closed.
func (p *ClientPlugin) Close(context.Context) error { return p.client.Close() }

// UsePlugins takes the shared client named by the `client` param.
func (r *Redis) UsePlugins(lookup func(typ, name string) (plugin.Plugin, bool)) error {
	name := r.plugin
	if name == "" {
		return nil
	}
	cp, err := plugin.Find[*ClientPlugin](lookup, PluginType, name)
	if err != nil {
		return fmt.Errorf("redis connector %q: client %q: %w", r.cfg.CName, name, err)
	}
	r.shared = cp
	return nil
}
