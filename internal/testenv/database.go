package testenv

import (
	"database/sql"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // the database/sql driver "pgx"
)

// PostgresDatabase creates a PostgreSQL database for one test, dropped at
// its end, and returns its URL.
func PostgresDatabase(t testing.TB) string {
	t.Helper()
	return PostgresDatabaseOn(t, Postgres.Addr(t))
}

// PostgresDatabaseOn creates a database for one test on the server of the
// URL base, dropped at its end, and returns its URL.
func PostgresDatabaseOn(t testing.TB, base string) string {
	t.Helper()
	name := createDatabase(t, "pgx", base, " WITH (FORCE)")
	i := strings.LastIndex(base, "/")
	url := base[:i+1] + name
	if q := strings.Index(base[i:], "?"); q >= 0 {
		url += base[i+q:]
	}
	return url
}

// MySQLDatabase creates a MariaDB/MySQL database for one test, dropped at
// its end, and returns its DSN.
func MySQLDatabase(t testing.TB) string {
	t.Helper()
	return MySQLDatabaseOn(t, MySQL.Addr(t))
}

// MySQLDatabaseOn creates a database for one test on the server of the DSN
// base, dropped at its end, and returns its DSN.
func MySQLDatabaseOn(t testing.TB, base string) string {
	t.Helper()
	name := createDatabase(t, "mysql", base, "")
	mc, err := mysql.ParseDSN(base)
	if err != nil {
		t.Fatal(err)
	}
	mc.DBName = name
	return mc.FormatDSN()
}

func createDatabase(t testing.TB, driver, dsn, dropSuffix string) string {
	t.Helper()
	name := Name("kisflow_")
	admin, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		admin.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = admin.Exec("DROP DATABASE " + name + dropSuffix)
		admin.Close()
	})
	return name
}
