package fault

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/kisflow-go/kisflow/internal/testenv"
)

// kisflow dry-run against a Redis source that is down names it and exits 1
// at once (run would wait for it). With the server up it exits 0, and the
// stream, its consumer groups and the PostgreSQL sink table are as they
// were: nothing was read, acknowledged or written.
func TestDryRunStartsChecksAndTouchesNothing(t *testing.T) {
	t.Parallel()
	port := closedPort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	pgURL := testenv.PostgresDatabase(t)
	pg, err := sql.Open("pgx", pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := pg.ExecContext(ctx, "CREATE TABLE paid (id BIGINT PRIMARY KEY); INSERT INTO paid VALUES (1), (2)"); err != nil {
		t.Fatal(err)
	}
	dir := Dir(t, map[string]string{
		"conns.yml": "kistype: conn\ncname: in\ntype: redis\naddrs: " + addr + "\nkey: orders\nparams:\n  mode: stream\n" +
			"---\nkistype: conn\ncname: db\ntype: postgres\nkey: paid\nparams:\n  dsn: " + pgURL + "\n  columns: id\n",
		"flow.yml": "kistype: flow\nstatus: 1\nflow_name: Paid\nflows:\n  - fname: Keep\nstream:\n  source: in\n  sink: db\n" +
			"---\nkistype: func\nfname: Keep\nfmode: Verify\nfilter: 'true'\n",
	})

	start := time.Now()
	r := Run(t, dir, 2*time.Minute, "dry-run", dir)
	if r.Code != 1 {
		t.Fatalf("with Redis down: exit %d, want 1\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if !strings.Contains(r.Stdout, "connector in (type redis, source): FAILED: cannot start: ") || !strings.Contains(r.Stdout, "connection refused") {
		t.Errorf("the line of the source does not say it is down:\n%s", r.Stdout)
	}
	if !strings.Contains(r.Stdout, "connector db (type postgres, sink): ok") {
		t.Errorf("the sink is not ok:\n%s", r.Stdout)
	}
	if !strings.Contains(r.Stderr, "1 of 2 connector(s) failed the check") {
		t.Errorf("stderr:\n%s", r.Stderr)
	}
	t.Logf("dry-run with the source down took %s", time.Since(start).Round(time.Millisecond))

	redisOn(t, port)
	rc := goredis.NewClient(&goredis.Options{Addr: addr})
	defer rc.Close()
	for i := range 3 {
		if err := rc.XAdd(ctx, &goredis.XAddArgs{Stream: "orders", Values: []any{"data", fmt.Sprintf(`{"id":%d}`, i)}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	r = Run(t, dir, 2*time.Minute, "dry-run", dir)
	if r.Code != 0 {
		t.Fatalf("with Redis up: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	for _, want := range []string{"connector in (type redis, source): ok", "connector db (type postgres, sink): ok"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, r.Stdout)
		}
	}
	if n, err := rc.XLen(ctx, "orders").Result(); err != nil || n != 3 {
		t.Errorf("the stream holds %d entries (%v), want 3", n, err)
	}
	if g, err := rc.XInfoGroups(ctx, "orders").Result(); err != nil || len(g) != 0 {
		t.Errorf("dry-run made consumer groups %v (%v)", g, err)
	}
	var n int
	if err := pg.QueryRowContext(ctx, "SELECT count(*) FROM paid").Scan(&n); err != nil || n != 2 {
		t.Errorf("the sink table holds %d rows (%v), want 2", n, err)
	}

	// A source key of another type fails the check, and is left alone.
	if err := rc.Del(ctx, "orders").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.RPush(ctx, "orders", "x").Err(); err != nil {
		t.Fatal(err)
	}
	r = Run(t, dir, 2*time.Minute, "dry-run", dir)
	if r.Code != 1 || !strings.Contains(r.Stdout, "key orders holds a list, not a stream") {
		t.Errorf("a list as the source stream: exit %d\n%s", r.Code, r.Stdout)
	}
}
