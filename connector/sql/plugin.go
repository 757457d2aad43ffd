package sql

import (
	"context"
	stdsql "database/sql"
	"fmt"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"

	"github.com/kisflow-go/kisflow/checkpoint"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/plugin"
)

// PoolConfig is the config of a shared connection pool, configured in the
// global file under plugins.postgres.<name> or plugins.mysql.<name> and
// used by connectors of that type whose params say `client: <name>`: one
// pool for the tables of one database (${VAR} expands, as in every plugin
// config).
type PoolConfig struct {
	DSN      string        `yaml:"dsn" doc:"the data source name (required; use ${VAR} for its password)"`
	MaxConns int           `yaml:"max_conns" doc:"connections of the pool"`
	Timeout  time.Duration `yaml:"timeout" doc:"connect and ping"`
}

// Validate checks the values.
func (c *PoolConfig) Validate() error {
	if c.DSN == "" {
		return fmt.Errorf("dsn is required")
	}
	if c.MaxConns < 1 || c.Timeout <= 0 {
		return fmt.Errorf("max_conns must be >= 1 and timeout > 0")
	}
	return nil
}

// PoolPlugin is a database/sql pool shared by the connectors that name it.
type PoolPlugin struct {
	dialect checkpoint.Dialect
	dsn     string
	cfg     PoolConfig
	db      *stdsql.DB
}

// PoolSpecs are the plugin types of shared pools (postgres, mysql);
// Install registers them.
var PoolSpecs = []plugin.Spec{
	{Type: TypePostgres, New: newPool(checkpoint.Postgres), Summary: "a PostgreSQL pool shared by the connectors whose param client names it", Config: &PoolConfig{MaxConns: 16, Timeout: 5 * time.Second}},
	{Type: TypeMySQL, New: newPool(checkpoint.MySQL), Summary: "a MySQL pool shared by the connectors whose param client names it", Config: &PoolConfig{MaxConns: 16, Timeout: 5 * time.Second}},
}

func newPool(dialect checkpoint.Dialect) func(string, *config.PluginConfig) (plugin.Plugin, error) {
	return func(_ string, pc *config.PluginConfig) (plugin.Plugin, error) {
		c := PoolConfig{MaxConns: 16, Timeout: 5 * time.Second}
		if err := pc.Decode(&c); err != nil {
			return nil, err
		}
		dsn := c.DSN
		var err error
		if dialect == checkpoint.MySQL {
			dsn, err = mysqlDSN(dsn, false)
		} else {
			_, err = pgx.ParseConfig(dsn)
		}
		if err != nil {
			return nil, pc.Problem(fmt.Errorf("bad dsn: %w", err))
		}
		return &PoolPlugin{dialect: dialect, dsn: dsn, cfg: c}, nil
	}
}

// Start opens the pool and checks the database answers.
func (p *PoolPlugin) Start(ctx context.Context, _ plugin.Host) error {
	driver := "pgx"
	if p.dialect == checkpoint.MySQL {
		driver = "mysql"
	}
	db, err := stdsql.Open(driver, p.dsn)
	if err != nil {
		return err
	}
	db.SetMaxOpenConns(p.cfg.MaxConns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	pctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return err
	}
	p.db = db
	return nil
}

// DB returns the shared pool.
func (p *PoolPlugin) DB() *stdsql.DB { return p.db }

// Close closes the pool, after every connector using it closed.
func (p *PoolPlugin) Close(context.Context) error {
	if p.db == nil {
		return nil
	}
	return p.db.Close()
}

// UsePlugins takes the shared pool named by the `client` param.
func (d *DB) UsePlugins(lookup func(typ, name string) (plugin.Plugin, bool)) error {
	name := d.client
	if name == "" {
		return nil
	}
	typ := TypePostgres
	switch d.dialect {
	case checkpoint.SQLite:
		return fmt.Errorf("sqlite connector %q: client %q: the embedded database has no shared pool", d.cfg.CName, name)
	case checkpoint.MySQL:
		typ = TypeMySQL
	}
	pool, err := plugin.Find[*PoolPlugin](lookup, typ, name)
	if err != nil {
		return fmt.Errorf("%s connector %q: client %q: %w", typ, d.cfg.CName, name, err)
	}
	d.shared = pool
	return nil
}

// mysqlDSN completes a MySQL DSN with the settings the connector relies
// on: parsed times, and timeouts on dialing, reads and writes.
func mysqlDSN(dsn string, tls bool) (string, error) {
	mc, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "", err
	}
	mc.ParseTime = true
	if mc.Timeout == 0 {
		mc.Timeout = 5 * time.Second
	}
	if mc.ReadTimeout == 0 {
		mc.ReadTimeout = 30 * time.Second
	}
	if mc.WriteTimeout == 0 {
		mc.WriteTimeout = 30 * time.Second
	}
	if tls {
		mc.TLSConfig = "true"
	}
	return mc.FormatDSN(), nil
}
