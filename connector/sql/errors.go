package sql

import (
	"errors"
	"strings"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"

	"github.com/kisflow-go/kisflow/stream"
)

// classify marks an error of the database for the runtime: a row the
// database refuses by a constraint, a type or a value is stream.Permanent
// (the runtime splits the batch down to it and dead-letters it); a
// configuration error (a missing table or column, refused credentials or
// privileges, a file that is not a database) is stream.Fatal; anything
// else (a lost connection, a timeout, a deadlock, a full disk) stays
// unmarked and is retried. An error already marked is returned as it is.
func classify(err error) error {
	if err == nil || stream.IsPermanent(err) || stream.IsFatal(err) {
		return err
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch class := pe.Code[:2]; {
		case class == "22", class == "23", pe.Code == "42804", pe.Code == "54000":
			// data exception, integrity constraint, datatype mismatch,
			// a value too large for an index row
			return stream.Permanent(err)
		case class == "28", class == "3D", class == "3F", pe.Code == "42P01", pe.Code == "42703", pe.Code == "42501":
			// authorization, unknown database or schema, undefined
			// table or column, insufficient privilege
			return stream.Fatal(err)
		}
		return err
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		switch me.Number {
		case 1048, 1062, 1263, 1264, 1265, 1292, 1300, 1364, 1366, 1367, 1406, 1411, 1416, 1451, 1452, 1690, 1216, 1217, 3140, 3819, 4025:
			// null into NOT NULL, duplicate key, out of range, truncated,
			// incorrect value, no default, too long, foreign key, invalid
			// JSON, check constraint (MySQL 3819, MariaDB 4025)
			return stream.Permanent(err)
		case 1044, 1045, 1049, 1054, 1142, 1143, 1146, 1227:
			// access denied, unknown database, unknown column, missing
			// table, missing privilege
			return stream.Fatal(err)
		}
		return err
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case 18, 19, 20: // SQLITE_TOOBIG, SQLITE_CONSTRAINT, SQLITE_MISMATCH
			return stream.Permanent(err)
		case 3, 8, 11, 14, 23, 26: // PERM, READONLY, CORRUPT, CANTOPEN, AUTH, NOTADB
			return stream.Fatal(err)
		case 1: // SQLITE_ERROR: the statement itself
			if msg := se.Error(); strings.Contains(msg, "no such table") || strings.Contains(msg, "has no column named") {
				return stream.Fatal(err)
			}
		}
		return err
	}
	if msg := err.Error(); strings.Contains(msg, "failed to encode args[") || strings.Contains(msg, "sql: converting argument ") {
		// pgx could not convert a row's value to the column's type, or
		// database/sql a value to one its driver takes (a channel, a
		// complex number): the row's fault, the same at every attempt.
		return stream.Permanent(err)
	}
	return err
}
