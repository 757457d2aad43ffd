package sql

import (
	"time"

	"github.com/kisflow-go/kisflow/driver"
)

// common are the params every SQL type takes.
type common struct {
	Columns      []string      `param:"columns" doc:"comma-separated columns to write; an entry column=field takes the column's value from another row field; default: the table's columns, or the first row's fields when the table is created" example:"id,amount=total"`
	Mode         string        `param:"mode" default:"insert" enum:"insert|apply" doc:"insert: each row is inserted (upserted with upsert_key); apply: rows are changes (a postgres_cdc or mysql_cdc source's) applied by the table's key (upsert_key, else its primary key): a row whose _op is delete deletes, truncate empties the table, any other upserts; fields starting with _ are not columns"`
	SourceTable  string        `param:"source_table" doc:"mode apply: the captured table (schema.table, or table) whose changes are applied; the changes of any other table (by _table) are left out. Needed when the source captures several tables; without it every change is applied, and a change of a second table ends the run" example:"public.orders"`
	UpsertKey    []string      `param:"upsert_key" doc:"comma-separated conflict columns: a row whose key exists updates the other columns; with create, the table's primary key"`
	Create       bool          `param:"create" default:"false" doc:"create the table if it is missing, with column types from the first row (a map, slice or struct field: a text column, holding its JSON)"`
	LoadQuery    string        `param:"load_query" doc:"the query a Load function with no Go body runs: one :field placeholder, written IN (:field), filled with the distinct values of the field in a run's rows; the result names the key column as the field" example:"SELECT id AS user_id, name FROM users WHERE id IN (:user_id)"`
	PollColumn   string        `param:"poll_column" doc:"the source: an increasing column, read up to the horizon of open transactions"`
	PollInterval time.Duration `param:"poll_interval" default:"500ms" min:"1ms" doc:"how often the source polls when it found nothing new"`
	InboxTTL     time.Duration `param:"inbox_ttl" default:"168h" min:"1s" doc:"how long an exactly-once sink's inbox keeps a consumed message's ID"`
	Timeout      time.Duration `param:"timeout" default:"5s" min:"1ms" doc:"connect and ping"`
	MaxConns     int           `param:"max_conns" default:"8" min:"1" doc:"connections of the pool"`
	yamlLoad
}

// yamlLoad are the defaults of the YAML Load functions that use the
// connector (each may set its own).
type yamlLoad struct {
	OnMissing string        `param:"on_missing" default:"pass" enum:"pass|drop|dead_letter" doc:"what a YAML Load does with a row whose key has no record"`
	CacheTTL  time.Duration `param:"cache_ttl" default:"0" min:"0" doc:"how long a YAML Load keeps what it looked up (hits and misses); 0: no cache"`
	CacheSize int           `param:"cache_size" default:"100000" min:"1" doc:"the most keys a YAML Load's cache holds"`
}

type sqliteParams struct {
	Path    string        `param:"path" doc:"the database file, relative to the YAML file's folder (else addrs)" example:"out.db"`
	PollLag time.Duration `param:"poll_lag" default:"0" min:"0" doc:"the source reads only rows older than this"`
	common
}

// server are the params of the client-server types.
type server struct {
	DSN      string `param:"dsn" doc:"the data source name; else addrs with user, password and database"`
	User     string `param:"user" alias:"username" doc:"the user, when no dsn is given"`
	Password string `param:"password" secret:"true" doc:"the user's password"`
	Database string `param:"database" doc:"the database, when no dsn is given"`
	Client   string `param:"client" doc:"the name of a shared pool configured as plugins.TYPE.NAME in the global file; the connection params are then the plugin's"`
}

type mysqlParams struct {
	server
	TLS     bool          `param:"tls" default:"false" doc:"connect with TLS"`
	PollLag time.Duration `param:"poll_lag" default:"5s" min:"0" doc:"the source reads only rows older than this: MySQL shows no open transactions, so this lag is its whole horizon"`
	common
}

type postgresParams struct {
	server
	SSLMode            string        `param:"sslmode" default:"prefer" enum:"disable|allow|prefer|require|verify-ca|verify-full" doc:"libpq's sslmode, when no dsn is given"`
	TargetSessionAttrs string        `param:"target_session_attrs" default:"read-write" enum:"any|read-write|read-only|primary|standby|prefer-standby" doc:"which of several addrs to use"`
	PollLag            time.Duration `param:"poll_lag" default:"0" min:"0" doc:"how old the source's horizon must also be"`
	common
}

// Specs of the SQL connector types.
var (
	SQLiteSpec   = sqlSpec(driver.MustSpec[sqliteParams](TypeSQLite, "embedded SQLite (modernc.org/sqlite, pure Go): a sink, an exactly-once sink, Save and Load, and a polling source"), "a file, when params.path is not given")
	MySQLSpec    = sqlSpec(driver.MustSpec[mysqlParams](TypeMySQL, "MySQL and MariaDB (go-sql-driver/mysql): a sink, an exactly-once sink, Save and Load, and a polling source"), "one host:port (default 127.0.0.1:3306)")
	PostgresSpec = sqlSpec(driver.MustSpec[postgresParams](TypePostgres, "PostgreSQL (pgx v5): a sink, an exactly-once sink, Save and Load, and a polling source"), "host:port list (several make a multi-host DSN), or one postgres:// URL used as the DSN")
)

func sqlSpec(s *driver.Spec, addrs string) *driver.Spec {
	s.Addrs, s.Key = addrs, "the table"
	return s
}
