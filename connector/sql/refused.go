package sql

import (
	"errors"
	"strings"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/kisflow-go/kisflow/stream"
)

// refused marks an insert error that is the rows' fault, not the
// database's state, as stream.Permanent: a value the column's type does
// not take, a constraint the row breaks. The runtime then splits the
// batch down to the refused rows and dead-letters them at once instead of
// retrying the batch for ever. Every other error (a lost connection, a
// full disk) stays unmarked and is retried.
func refused(err error) error {
	var pg *pgconn.PgError
	if errors.As(err, &pg) && (strings.HasPrefix(pg.Code, "22") || strings.HasPrefix(pg.Code, "23")) {
		return stream.Permanent(err) // data exception, integrity constraint violation
	}
	var my *mysql.MySQLError
	if errors.As(err, &my) {
		switch my.Number {
		case 1048, 1062, 1216, 1264, 1265, 1292, 1366, 1406, 1451, 1452, 1690, 3819, 4025:
			// null into NOT NULL, duplicate key, foreign key, out of range,
			// truncated, bad value, too long, check constraint
			return stream.Permanent(err)
		}
	}
	// SQLite (modernc) reports constraint failures and type mismatches in
	// the error text with their result code names.
	if msg := err.Error(); strings.Contains(msg, "SQLITE_CONSTRAINT") || strings.Contains(msg, "SQLITE_MISMATCH") {
		return stream.Permanent(err)
	}
	return err
}
