package pgcdc

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/internal/cdcsnap/cdcsnaptest"
	"github.com/kisflow-go/kisflow/internal/testenv"
)

// TestSnapshotResumesAfterLastKey stops a source twice during its snapshot
// and resumes it (the scenario of cdcsnaptest.Resume): a table with a
// composite key (integer, text: read in COLLATE "C" order) and a table
// without a key, changed while the source is stopped.
func TestSnapshotResumesAfterLastKey(t *testing.T) {
	t.Parallel()
	srv := testenv.PrivatePostgres(t, "wal_level=logical", "max_replication_slots=10", "max_wal_senders=10")
	url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", srv.Port())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	d, err := New(&config.Conn{CName: "cdc", Addrs: url, Key: "a,b", Params: map[string]string{"slot": "s", "publication": "p", "status_interval": "100ms"}})
	if err != nil {
		t.Fatal(err)
	}
	cdcsnaptest.Resume{
		Setup: []string{
			"CREATE TABLE a (g INT, name TEXT, v INT, PRIMARY KEY (g, name))",
			"INSERT INTO a SELECT g, n, 0 FROM generate_series(1, 3) g, unnest(ARRAY['a', 'é', 'B', '_x', 'Z']) n",
			"CREATE TABLE b (x INT, v INT)",
			"ALTER TABLE b REPLICA IDENTITY FULL",
			"INSERT INTO b SELECT x, 0 FROM generate_series(1, 5) x",
		},
		Source: d.(*CDC),
		Exec: func(ctx context.Context, q string) error {
			_, err := db.Exec(ctx, q)
			return err
		},
		A: "a", B: "b", TableA: "public.a", TableB: "public.b",
		DeletedV: "<nil>", // a's replica identity is its key: a delete carries the key only
	}.Run(ctx, t)
}
