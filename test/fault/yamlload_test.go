package fault

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/kisflow-go/kisflow/internal/testenv"
)

// The YAML-only enrichment tests: a file of orders (user_id 0..11; users
// 1..10 exist) runs through a Load function with no Go body, then a Save
// function with no Go body into a file, in batches of 100, with no Go code.

const (
	yamlOrders    = 300
	yamlBatch     = 100
	yamlBatches   = yamlOrders / yamlBatch
	yamlUsers     = 10
	yamlUserSpan  = 12 // user_id = order_id % 12: 0 and 11 have no user
	yamlUserTiers = "gold,silver"
)

func yamlTier(id int) string { return strings.Split(yamlUserTiers, ",")[id%2] }

// yamlLoadDir is a config folder: in.jsonl -> Enrich (a Load through the
// connector "users", whose YAML is users; params are Enrich's
// default_params) -> Store (a Save into out.jsonl) -> the stream's sink
// copy.jsonl.
func yamlLoadDir(t *testing.T, users string, params map[string]string) string {
	t.Helper()
	var p strings.Builder
	for k, v := range params {
		fmt.Fprintf(&p, "    %s: %q\n", k, v)
	}
	return Dir(t, map[string]string{
		"in.jsonl": IDLines(yamlOrders, func(i int) string {
			return fmt.Sprintf(`{"order_id":%d,"user_id":%d}`, i, i%yamlUserSpan)
		}),
		"flow.yml": fmt.Sprintf(`kistype: flow
status: 1
flow_name: Orders
flows:
  - fname: Enrich
  - fname: Store
stream:
  source: in
  sink: copy
  batch_size: %d
---
kistype: func
fname: Enrich
fmode: Load
option:
  cname: users
  default_params:
%s---
kistype: func
fname: Store
fmode: Save
option:
  cname: out
---
kistype: conn
cname: in
type: file
params:
  path: in.jsonl
---
kistype: conn
cname: out
type: file
params:
  path: out.jsonl
---
kistype: conn
cname: copy
type: file
params:
  path: copy.jsonl
---
%s`, yamlBatch, p.String(), users),
	})
}

var fetchLine = regexp.MustCompile(`msg="load fetch".* rows=(\d+) keys=(\d+)`)

// runYAMLLoad runs the folder to its end and returns the output rows by
// order_id and the rows and keys of each fetch the debug log reports.
func runYAMLLoad(t *testing.T, dir string) (map[int]map[string]any, [][2]int) {
	t.Helper()
	res := Run(t, dir, 2*time.Minute, "run", ".", "--state", ".kisflow", "--log-level", "debug")
	if res.Code != 0 {
		t.Fatalf("exit %d\n%s\n%s", res.Code, res.Stdout, tail(res.Stderr, 4000))
	}
	out := map[int]map[string]any{}
	for _, m := range JSONLines(t, filepath.Join(dir, "out.jsonl")) {
		id := int(m["order_id"].(float64))
		if out[id] != nil {
			t.Fatalf("order %d written twice", id)
		}
		out[id] = m
	}
	// Store passed on what it saved.
	if copied := JSONLines(t, filepath.Join(dir, "copy.jsonl")); len(copied) != len(out) {
		t.Fatalf("%d rows saved by Store, %d passed on to the sink", len(out), len(copied))
	} else {
		for _, m := range copied {
			if id := int(m["order_id"].(float64)); fmt.Sprint(out[id]) != fmt.Sprint(m) {
				t.Fatalf("order %d saved as %v, passed on as %v", id, out[id], m)
			}
		}
	}
	var fetches [][2]int
	for _, m := range fetchLine.FindAllStringSubmatch(res.Stderr, -1) {
		rows, _ := strconv.Atoi(m[1])
		keys, _ := strconv.Atoi(m[2])
		fetches = append(fetches, [2]int{rows, keys})
	}
	return out, fetches
}

// checkEnriched checks every order was written once, with its user's name
// and tier merged in when the user exists, and unchanged when not.
func checkEnriched(t *testing.T, out map[int]map[string]any) {
	t.Helper()
	if len(out) != yamlOrders {
		t.Fatalf("%d orders written, want %d", len(out), yamlOrders)
	}
	for id := 1; id <= yamlOrders; id++ {
		m := out[id]
		if m == nil {
			t.Fatalf("order %d missing", id)
		}
		uid := id % yamlUserSpan
		if got := m["user_id"]; got != float64(uid) {
			t.Fatalf("order %d: user_id %v, want %d", id, got, uid)
		}
		if uid < 1 || uid > yamlUsers {
			if len(m) != 2 {
				t.Fatalf("order %d of unknown user %d changed: %v", id, uid, m)
			}
			continue
		}
		if m["name"] != fmt.Sprintf("user%d", uid) || m["tier"] != yamlTier(uid) {
			t.Fatalf("order %d of user %d: %v", id, uid, m)
		}
	}
}

// checkOneFetchPerBatch checks each batch of yamlBatch rows was looked up
// in one fetch of its distinct keys.
func checkOneFetchPerBatch(t *testing.T, fetches [][2]int) {
	t.Helper()
	if len(fetches) != yamlBatches {
		t.Fatalf("%d fetches, want one per batch (%d): %v", len(fetches), yamlBatches, fetches)
	}
	for _, f := range fetches {
		if f != [2]int{yamlBatch, yamlUserSpan} {
			t.Fatalf("fetch of %d rows and %d keys, want %d rows and their %d distinct keys", f[0], f[1], yamlBatch, yamlUserSpan)
		}
	}
}

const usersQuery = "SELECT id AS user_id, name, tier FROM users WHERE id IN (:user_id)"

func TestYAMLLoadFromSQLite(t *testing.T) {
	t.Parallel()
	dir := yamlLoadDir(t, `kistype: conn
cname: users
type: sqlite
params:
  path: users.db
`, map[string]string{"load_query": usersQuery})
	db, err := sql.Open("sqlite", filepath.Join(dir, "users.db"))
	if err != nil {
		t.Fatal(err)
	}
	fillUsers(t, db, "INTEGER PRIMARY KEY", "?")
	db.Close()

	out, fetches := runYAMLLoad(t, dir)
	checkEnriched(t, out)
	checkOneFetchPerBatch(t, fetches)
}

func TestYAMLLoadFromPostgres(t *testing.T) {
	t.Parallel()
	dsn := testenv.PostgresDatabase(t)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	fillUsers(t, db, "BIGINT PRIMARY KEY", "$")
	// The query draws from a sequence once per run (a CTE is evaluated
	// once): the server's own count of the queries.
	if _, err := db.Exec("CREATE SEQUENCE lookups"); err != nil {
		t.Fatal(err)
	}
	query := "WITH n AS (SELECT nextval('lookups')) SELECT id AS user_id, name, tier FROM users, n WHERE id IN (:user_id)"

	// Orders of unknown users are dead-lettered on request.
	dir := yamlLoadDir(t, fmt.Sprintf(`kistype: conn
cname: users
type: postgres
params:
  dsn: %s
  load_query: %s
`, dsn, query), map[string]string{"on_missing": "dead_letter"})
	out, fetches := runYAMLLoad(t, dir)
	checkOneFetchPerBatch(t, fetches)
	dead := JSONLines(t, filepath.Join(dir, ".kisflow", "dead-letter", "Orders.jsonl"))
	if len(out)+len(dead) != yamlOrders {
		t.Fatalf("%d written and %d dead-lettered of %d", len(out), len(dead), yamlOrders)
	}
	for id, m := range out {
		uid := id % yamlUserSpan
		if uid < 1 || uid > yamlUsers || m["name"] != fmt.Sprintf("user%d", uid) || m["tier"] != yamlTier(uid) {
			t.Fatalf("order %d: %v", id, m)
		}
	}
	for _, d := range dead {
		if !strings.Contains(fmt.Sprint(d), "no record for key") {
			t.Fatalf("dead letter without its reason: %v", d)
		}
	}
	if want := yamlOrders * 2 / yamlUserSpan; len(dead) != want {
		t.Fatalf("%d dead letters, want the %d orders of users 0 and 11", len(dead), want)
	}
	var queries int64
	if err := db.QueryRow("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM lookups").Scan(&queries); err != nil {
		t.Fatal(err)
	}
	if queries != yamlBatches {
		t.Fatalf("%d queries, want one per batch (%d)", queries, yamlBatches)
	}
}

// fillUsers creates the table users (id, name, tier) with users 1..10;
// bind is the driver's placeholder ("?" or "$").
func fillUsers(t *testing.T, db *sql.DB, idType, bind string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, "CREATE TABLE users (id "+idType+", name TEXT, tier TEXT)"); err != nil {
		t.Fatal(err)
	}
	q := "INSERT INTO users VALUES (?, ?, ?)"
	if bind == "$" {
		q = "INSERT INTO users VALUES ($1, $2, $3)"
	}
	for id := 1; id <= yamlUsers; id++ {
		if _, err := db.ExecContext(ctx, q, id, fmt.Sprintf("user%d", id), yamlTier(id)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestYAMLLoadFromRedis(t *testing.T) {
	t.Parallel()
	srv := testenv.PrivateRedis(t) // its own command statistics
	addr := fmt.Sprintf("127.0.0.1:%d", srv.Port())
	rdb := goredis.NewClient(&goredis.Options{Addr: addr})
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	for id := 1; id <= yamlUsers; id++ {
		v, _ := json.Marshal(map[string]any{"name": fmt.Sprintf("user%d", id), "tier": yamlTier(id)})
		if err := rdb.Set(ctx, fmt.Sprintf("user:%d", id), v, 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := rdb.HSet(ctx, fmt.Sprintf("h:user:%d", id), "name", fmt.Sprintf("user%d", id), "tier", yamlTier(id)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	calls := func(cmd string) int {
		info, err := rdb.Info(ctx, "commandstats").Result()
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`cmdstat_` + cmd + `:calls=(\d+)`).FindStringSubmatch(info)
		if m == nil {
			return 0
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	conn := fmt.Sprintf("kistype: conn\ncname: users\ntype: redis\naddrs: %s\nkey: user:{user_id}\nparams:\n  mode: string\n", addr)

	for _, tc := range []struct {
		name       string
		params     map[string]string
		cmd        string
		wantCalls  int
		wantFetchs int
	}{
		// One MGET per batch.
		{"mget", nil, "mget", yamlBatches, yamlBatches},
		// Every key is in the first batch, then in the cache.
		{"mget cached", map[string]string{"cache_ttl": "1m"}, "mget", 1, 1},
		// One pipelined HGETALL per key of each batch.
		{"hash", map[string]string{"load_mode": "hash", "load_key": "h:user:{user_id}"}, "hgetall", yamlBatches * yamlUserSpan, yamlBatches},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := calls(tc.cmd)
			out, fetches := runYAMLLoad(t, yamlLoadDir(t, conn, tc.params))
			checkEnriched(t, out)
			if got := calls(tc.cmd) - before; got != tc.wantCalls {
				t.Fatalf("%d %s calls, want %d", got, tc.cmd, tc.wantCalls)
			}
			if len(fetches) != tc.wantFetchs {
				t.Fatalf("%d fetches, want %d: %v", len(fetches), tc.wantFetchs, fetches)
			}
			if tc.wantFetchs == yamlBatches {
				checkOneFetchPerBatch(t, fetches)
			}
		})
	}
}

// TestYAMLSaveRowRefusedIsDeadLettered saves orders through a Save
// function with no Go body into PostgreSQL, which refuses one: that order
// is dead-lettered, and every other is saved and passed on to the sink.
func TestYAMLSaveRowRefusedIsDeadLettered(t *testing.T) {
	t.Parallel()
	const n, bad = 500, 321
	dsn := testenv.PostgresDatabase(t)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE TABLE amounts (id BIGINT NOT NULL, amount BIGINT NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	dir := Dir(t, map[string]string{
		"in.jsonl": IDLines(n, func(i int) string {
			if i == bad {
				return fmt.Sprintf(`{"id":%d,"qty":"twelve"}`, i)
			}
			return fmt.Sprintf(`{"id":%d,"qty":%d}`, i, i%5)
		}),
		"flow.yml": `kistype: flow
status: 1
flow_name: Amounts
flows:
  - fname: Store
stream:
  source: in
  sink: copy
  batch_size: 100
---
kistype: func
fname: Store
fmode: Save
option:
  cname: db
---
kistype: conn
cname: in
type: file
params:
  path: in.jsonl
---
kistype: conn
cname: copy
type: file
params:
  path: copy.jsonl
---
kistype: conn
cname: db
type: postgres
key: amounts
params:
  dsn: ` + dsn + `
  columns: id,amount=qty
`,
	})
	res := Run(t, dir, 2*time.Minute, "run", ".", "--state", ".kisflow")
	if res.Code != 0 {
		t.Fatalf("exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	saved := Counts(t, db, "SELECT id FROM amounts")
	copied := map[int64]int{}
	for _, m := range JSONLines(t, filepath.Join(dir, "copy.jsonl")) {
		copied[int64(m["id"].(float64))]++
	}
	for name, counts := range map[string]map[int64]int{"saved": saved, "passed on": copied} {
		if counts[bad] != 0 {
			t.Fatalf("the refused order %d was %s", bad, name)
		}
		delete(counts, bad)
		counts[bad] = 1 // for Check: every other id once
		if miss := Check(counts, n, true); len(miss) > 0 {
			t.Fatalf("%s: %v", name, miss)
		}
	}
	dead := JSONLines(t, filepath.Join(dir, ".kisflow", "dead-letter", "Amounts.jsonl"))
	if len(dead) != 1 || !strings.Contains(fmt.Sprint(dead[0]), "twelve") {
		t.Fatalf("dead letters %v, want the refused order", dead)
	}
}

// TestYAMLLoadConfigErrorEndsTheJob runs a YAML Load whose query cannot
// work: a missing table, or a result without the key column. Either is a
// configuration error that ends the job at once: no retries, no row
// dead-lettered, nothing acknowledged (the next run reads from the start).
func TestYAMLLoadConfigErrorEndsTheJob(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, query, want string }{
		{"no key column", "SELECT name, tier FROM users WHERE id IN (:user_id)", `load_query returns no column "user_id"`},
		// No user has id 0 or 11: a query that finds nothing still lacks it.
		{"no key column, no match", "SELECT name FROM users WHERE id IN (:user_id) AND id > 100", `load_query returns no column "user_id"`},
		{"missing table", "SELECT id AS user_id, name FROM userz WHERE id IN (:user_id)", "no such table: userz"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := yamlLoadDir(t, "kistype: conn\ncname: users\ntype: sqlite\nparams:\n  path: users.db\n", map[string]string{"load_query": tc.query})
			db, err := sql.Open("sqlite", filepath.Join(dir, "users.db"))
			if err != nil {
				t.Fatal(err)
			}
			fillUsers(t, db, "INTEGER PRIMARY KEY", "?")
			db.Close()
			res := Run(t, dir, 2*time.Minute, "run", ".", "--state", ".kisflow")
			if res.Code != 1 {
				t.Fatalf("exit %d, want 1 (the job failed)\n%s%s", res.Code, res.Stdout, tail(res.Stderr, 4000))
			}
			if out := res.Stdout + res.Stderr; !strings.Contains(out, tc.want) || strings.Contains(out, "retrying") {
				t.Fatalf("want %q and no retry\n%s", tc.want, tail(out, 4000))
			}
			for _, f := range []string{"out.jsonl", "copy.jsonl", filepath.Join(".kisflow", "dead-letter", "Orders.jsonl")} {
				if rows := JSONLines(t, filepath.Join(dir, f)); len(rows) != 0 {
					t.Fatalf("%s has %d rows", f, len(rows))
				}
			}
		})
	}
}

// TestDryRunChecksYAMLLoadQuery: dry-run runs each YAML Load's query for
// no key, so a missing table or a result without the key column fails the
// check of its connector, before any run.
func TestDryRunChecksYAMLLoadQuery(t *testing.T) {
	t.Parallel()
	dsn := testenv.PostgresDatabase(t)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	fillUsers(t, db, "BIGINT PRIMARY KEY", "$")
	conn := fmt.Sprintf("kistype: conn\ncname: users\ntype: postgres\nparams:\n  dsn: %s\n", dsn)
	for _, tc := range []struct{ name, query, want string }{
		{"ok", usersQuery, "connector users (type postgres, load): ok"},
		{"no key column", "SELECT name, tier FROM users WHERE id IN (:user_id)", `load_query returns no column "user_id"`},
		{"missing table", "SELECT id AS user_id, name FROM userz WHERE id IN (:user_id)", `relation "userz" does not exist`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res := Run(t, yamlLoadDir(t, conn, map[string]string{"load_query": tc.query}), 2*time.Minute, "dry-run", ".")
			if want := map[bool]int{true: 0, false: 1}[tc.name == "ok"]; res.Code != want {
				t.Fatalf("exit %d, want %d\n%s%s", res.Code, want, res.Stdout, res.Stderr)
			}
			if !strings.Contains(res.Stdout, tc.want) {
				t.Fatalf("stdout lacks %q\n%s", tc.want, res.Stdout)
			}
		})
	}
}
