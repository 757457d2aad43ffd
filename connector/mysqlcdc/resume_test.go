package mysqlcdc

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/internal/cdcsnap/cdcsnaptest"
	"github.com/kisflow-go/kisflow/internal/testenv"
)

// TestSnapshotResumesAfterLastKey stops a source twice during its snapshot
// on MariaDB and resumes it (the scenario of cdcsnaptest.Resume): a table
// with a composite key (integer, varchar: read in the order of its bytes,
// which is not its collation's) and a table without a key, changed while
// the source is stopped.
func TestSnapshotResumesAfterLastKey(t *testing.T) {
	t.Parallel()
	srv := testenv.PrivateMariaDB(t, "--log-bin=mysql-bin", "--binlog-format=ROW", "--server-id=1")
	dsn := fmt.Sprintf("root@tcp(127.0.0.1:%d)/", srv.Port())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	boot, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer boot.Close()
	if _, err := boot.ExecContext(ctx, "CREATE DATABASE r"); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("mysql", dsn+"r")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	d, err := New(&config.Conn{CName: "cdc", Addrs: dsn + "r", Key: "a,b", Params: map[string]string{"server_id": "77", "heartbeat": "200ms"}})
	if err != nil {
		t.Fatal(err)
	}
	cdcsnaptest.Resume{
		Setup: []string{
			"CREATE TABLE r.a (g INT, name VARCHAR(20) CHARACTER SET utf8mb4, v INT, PRIMARY KEY (g, name))",
			"INSERT INTO r.a SELECT g.seq, n.name, 0 FROM seq_1_to_3 g, (SELECT 'a' name UNION SELECT 'é' UNION SELECT 'B' UNION SELECT '_x' UNION SELECT 'Z') n",
			"CREATE TABLE r.b (x INT, v INT)",
			"INSERT INTO r.b SELECT seq, 0 FROM seq_1_to_5",
		},
		Source: d.(*CDC),
		Exec: func(ctx context.Context, q string) error {
			_, err := db.ExecContext(ctx, q)
			return err
		},
		A: "r.a", B: "r.b", TableA: "r.a", TableB: "r.b",
		DeletedV: "0", // the binlog's delete carries the whole row
	}.Run(ctx, t)
}
