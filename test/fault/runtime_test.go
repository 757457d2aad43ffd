package fault

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	goredis "github.com/redis/go-redis/v9"

	"github.com/kisflow-go/kisflow/internal/testenv"
)

// poisonDir is fileToSQLite's folder (n JSON lines ids -> a calc -> an
// SQLite table out(id)) with every poisonEvery-th line poison, alternately
// not JSON (a decode error) and with a text qty (the calc expression fails
// on it). It returns the folder and the poison ids.
func poisonDir(t testing.TB, n, poisonEvery int, delivery string) (string, map[int64]bool) {
	t.Helper()
	poison := map[int64]bool{}
	lines := IDLines(n, func(i int) string {
		switch {
		case i%poisonEvery != 0:
			return fmt.Sprintf(`{"id":%d,"qty":%d}`, i, i%5)
		case (i/poisonEvery)%2 == 0:
			poison[int64(i)] = true
			return fmt.Sprintf(`{"id":%d,"qty":`, i)
		default:
			poison[int64(i)] = true
			return fmt.Sprintf(`{"id":%d,"qty":"lots"}`, i)
		}
	})
	dir := fileToSQLite(t, n, delivery)
	if err := os.WriteFile(filepath.Join(dir, "ids.jsonl"), []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, poison
}

var idInPayload = regexp.MustCompile(`"id":\s*(\d+)`)

// deadLetterIDs reads the dead-letter file of flow Ids and counts the ids
// of their payloads; attempts collects the attempt counts seen.
func deadLetterIDs(t *testing.T, dir string) (ids map[int64]int, attempts map[int]int) {
	t.Helper()
	ids, attempts = map[int64]int{}, map[int]int{}
	for _, dl := range JSONLines(t, filepath.Join(dir, "state", "dead-letter", "Ids.jsonl")) {
		payload, ok := dl["payload"].(string) // a line that is not JSON
		if !ok {
			b, _ := json.Marshal(dl["payload"])
			payload = string(b)
		}
		ids[payloadID(t, payload)]++
		a, _ := dl["attempts"].(float64)
		attempts[int(a)]++
	}
	return ids, attempts
}

// payloadID is the id in a dead letter's payload.
func payloadID(t *testing.T, payload string) int64 {
	t.Helper()
	m := idInPayload.FindStringSubmatch(payload)
	if m == nil {
		t.Fatalf("dead letter without an id: %s", payload)
	}
	id, _ := strconv.ParseInt(m[1], 10, 64)
	return id
}

// checkPoison checks that every good id is in the sink (exactly once when
// exact) and every poison id in the dead letters exactly once.
func checkPoison(t *testing.T, dir string, n int, poison map[int64]bool, exact bool) {
	t.Helper()
	sink := SQLiteCounts(t, filepath.Join(dir, "out.db"), "SELECT id FROM out")
	for id := range poison {
		if sink[id] > 0 {
			t.Errorf("poison id %d reached the sink", id)
		}
		sink[id] = 1 // for Check: accounted for by its dead letter
	}
	if bad := Check(sink, n, exact); len(bad) > 0 {
		t.Fatalf("sink: %v", bad)
	}
	dead, _ := deadLetterIDs(t, dir)
	checkDeadOnce(t, dead, poison)
}

// checkDeadOnce checks that the dead letters (counts by id) are the poison
// ids, once each.
func checkDeadOnce(t *testing.T, dead map[int64]int, poison map[int64]bool) {
	t.Helper()
	for id, c := range dead {
		if !poison[id] || c != 1 {
			t.Errorf("dead letter of id %d %d times (poison: %v), want poison ids once each", id, c, poison[id])
		}
	}
	if len(dead) != len(poison) {
		t.Fatalf("%d ids dead-lettered, want the %d poison ids", len(dead), len(poison))
	}
}

// Issue 10, findings 8 and 14: decode and expression errors go to the
// dead-letter file at once (one attempt, no backoff), every other row is
// committed, and an exactly-once run from a file prints no false
// at-least-once warning.
func TestPoisonRowsAreDeadLetteredOnceWithoutRetries(t *testing.T) {
	t.Parallel()
	for _, delivery := range []string{"at-least-once", "exactly-once"} {
		t.Run(delivery, func(t *testing.T) {
			t.Parallel()
			const n = 3000
			dir, poison := poisonDir(t, n, 30, delivery)
			res := Run(t, dir, 2*time.Minute, "run", dir, "--state", filepath.Join(dir, "state"), "--progress", "never")
			if res.Code != 0 {
				t.Fatalf("exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
			}
			checkPoison(t, dir, n, poison, true)
			if _, attempts := deadLetterIDs(t, dir); len(attempts) != 1 || attempts[1] != len(poison) {
				t.Fatalf("attempts per dead letter %v, want 1 for each (deterministic failures are not retried)", attempts)
			}
			if strings.Contains(res.Stderr, "delivery is at-least-once") {
				t.Fatalf("false at-least-once warning:\n%s", res.Stderr)
			}
			if !strings.Contains(res.Stdout, "flow Ids: no position: reading from the start") {
				t.Fatalf("the start does not say there was no position:\n%s", res.Stdout)
			}
		})
	}
}

// Issue 10, finding 4: exactly-once, dead letters of a batch are written
// once even when the process is killed between writing them and
// committing the batch.
func TestExactlyOnceDeadLettersOnceAcrossSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a process repeatedly")
	}
	t.Parallel()
	const n = 20000
	dir, poison := poisonDir(t, n, 10, "exactly-once")
	kills := killRepeatedly(t, dir)
	checkPoison(t, dir, n, poison, true)
	t.Logf("%d SIGKILLs: every good id once in the sink, every poison id once in the dead letters", kills)
}

// Issue 10: at-least-once, a batch processed again after a crash (its
// position was not saved yet) does not write its dead letters to the
// default dead-letter file again: they are recognised by their identity.
func TestAtLeastOnceDeadLettersOnceAcrossSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a process repeatedly")
	}
	t.Parallel()
	const n = 20000
	dir, poison := poisonDir(t, n, 10, "at-least-once")
	kills := killRepeatedly(t, dir)
	checkPoison(t, dir, n, poison, false)
	t.Logf("%d SIGKILLs: every good id in the sink, every poison id once in the dead letters", kills)
}

// Issue 10: a dead_letter connector that stores a dead letter once per
// letter_id (an SQLite table with upsert_key: letter_id, a Redis list with
// dedup_key: {letter_id}, a JetStream stream with msg_id: {letter_id})
// holds every dead letter once across crashes, although the runtime writes
// those of a batch processed again once more.
func TestDeadLetterConnectorOnceAcrossSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a process repeatedly")
	}
	t.Parallel()
	for _, tc := range []struct {
		name, delivery string
		// conn returns the YAML params of the dead-letter connector dlq
		// (after its cname) and a function reading back its payloads.
		conn func(t *testing.T, dir string) (string, func() []string)
	}{
		{"sqlite", "at-least-once", sqliteDeadLetters},
		{"sqlite", "exactly-once", sqliteDeadLetters},
		{"redis", "at-least-once", redisDeadLetters},
		{"nats", "at-least-once", natsDeadLetters},
	} {
		t.Run(tc.name+"/"+tc.delivery, func(t *testing.T) {
			t.Parallel()
			const n = 20000
			dir, poison := poisonDir(t, n, 10, tc.delivery)
			yml, payloads := tc.conn(t, dir)
			appendFile(t, filepath.Join(dir, "flow.yml"), "  dead_letter: dlq\n")
			appendFile(t, filepath.Join(dir, "conns.yml"), "---\nkistype: conn\ncname: dlq\n"+yml)
			kills := killRepeatedly(t, dir)
			sink := SQLiteCounts(t, filepath.Join(dir, "out.db"), "SELECT id FROM out")
			for id := range poison {
				sink[id] = 1 // accounted for by its dead letter
			}
			if bad := Check(sink, n, tc.delivery == "exactly-once"); len(bad) > 0 {
				t.Fatalf("sink: %v", bad)
			}
			dead := map[int64]int{}
			for _, p := range payloads() {
				dead[payloadID(t, p)]++
			}
			checkDeadOnce(t, dead, poison)
			if _, err := os.Stat(filepath.Join(dir, "state", "dead-letter", "Ids.jsonl")); err == nil {
				t.Fatal("dead letters went to the default file too")
			}
			t.Logf("%d SIGKILLs: every poison id once in the dead-letter connector", kills)
		})
	}
}

// sqliteDeadLetters is a dead-letter table dead in dir/dead.db keyed on
// letter_id.
func sqliteDeadLetters(t *testing.T, dir string) (string, func() []string) {
	yml := "type: sqlite\nkey: dead\nparams:\n  path: dead.db\n  create: \"true\"\n  columns: letter_id,func,error,payload\n  upsert_key: letter_id\n"
	return yml, func() []string {
		db, err := sql.Open("sqlite", filepath.Join(dir, "dead.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		rows, err := db.Query("SELECT payload FROM dead")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var payload []byte
			if err := rows.Scan(&payload); err != nil {
				t.Fatal(err)
			}
			out = append(out, string(payload))
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
}

// payloadOf is the payload of a dead letter as JSON: a line that was not
// JSON is a string.
func payloadOf(t *testing.T, record []byte) string {
	t.Helper()
	var dl struct{ Payload json.RawMessage }
	if err := json.Unmarshal(record, &dl); err != nil {
		t.Fatalf("dead letter %s: %v", record, err)
	}
	var s string
	if json.Unmarshal(dl.Payload, &s) == nil {
		return s
	}
	return string(dl.Payload)
}

// redisDeadLetters is a Redis list of dead letters, saved once per
// letter_id.
func redisDeadLetters(t *testing.T, _ string) (string, func() []string) {
	addr := testenv.Redis.Addr(t)
	key := testenv.Name("dlq")
	rdb := goredis.NewClient(&goredis.Options{Addr: addr})
	t.Cleanup(func() {
		ctx := context.Background()
		rdb.Del(ctx, key)
		if marks, err := rdb.Keys(ctx, "kisflow:saved:dlq:"+key+":*").Result(); err == nil && len(marks) > 0 {
			rdb.Del(ctx, marks...)
		}
		rdb.Close()
	})
	yml := "type: redis\naddrs: " + addr + "\nkey: " + key + "\nparams:\n  mode: list\n  dedup_key: \"{letter_id}\"\n  dedup_ttl: 10m\n"
	return yml, func() []string {
		items, err := rdb.LRange(context.Background(), key, 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		out := make([]string, len(items))
		for i, it := range items {
			out[i] = payloadOf(t, []byte(it))
		}
		return out
	}
}

// natsDeadLetters is a JetStream stream of dead letters whose message IDs
// are their letter_id (JetStream keeps one within its duplicate window).
func natsDeadLetters(t *testing.T, _ string) (string, func() []string) {
	url := testenv.NATS.Addr(t)
	name := strings.ToUpper(testenv.Name("DLQ"))
	js := jetStream(t, url)
	t.Cleanup(func() { _ = js.DeleteStream(context.Background(), name) })
	yml := "type: nats\naddrs: " + url + "\nkey: " + strings.ToLower(name) + ".dead\nparams:\n  stream: " + name +
		"\n  create: \"true\"\n  msg_id: \"{letter_id}\"\n"
	return yml, func() []string {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		want := int(st.CachedInfo().State.Msgs)
		c, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for len(out) < want {
			batch, err := c.Fetch(want-len(out), jetstream.FetchMaxWait(10*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			got := 0
			for m := range batch.Messages() {
				out = append(out, payloadOf(t, m.Data()))
				got++
			}
			if batch.Error() != nil || got == 0 {
				t.Fatalf("read %d of %d dead letters: %v", len(out), want, batch.Error())
			}
		}
		return out
	}
}

func appendFile(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
}

// killRepeatedly throttles the job in dir to about 5 s of work, then runs
// it, killing it (SIGKILL) at a random point after it starts, until a
// 13th run finishes or a run finishes before its kill; it returns the
// number of kills, and fails the test when fewer than 4 landed.
func killRepeatedly(t *testing.T, dir string) int {
	t.Helper()
	Throttle(t, dir, 4000) // about 5 s of work: the kills land mid-stream
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 10))
	kills := 0
	for run := 0; ; run++ {
		p := Start(t, dir, nil, "run", dir, "--state", filepath.Join(dir, "state"), "--progress", "never", "--log-level", "info")
		if run == 12 {
			if code := p.Wait(2 * time.Minute); code != 0 {
				t.Fatalf("last run: exit %d\n%s", code, p.Output())
			}
			break
		}
		p.WaitFor("job starts", time.Minute)
		select {
		case <-p.Done():
		case <-time.After(time.Duration(r.IntN(250)) * time.Millisecond):
			p.Kill()
			kills++
		}
		if p.Exited() && strings.Contains(p.Stdout(), "rows read") {
			break // finished before the kill
		}
	}
	if kills < 4 {
		t.Fatalf("only %d kills landed; the job is too short for the test", kills)
	}
	return kills
}

// Issue 10: a flow where every row fails the same way (a typo in an
// expression) stops with that error after a bounded number of rows.
func TestEveryRowFailingTheSameWayStopsTheJob(t *testing.T) {
	t.Parallel()
	const n = 5000
	dir := fileToSQLite(t, n, "at-least-once")
	typo := "kistype: func\nfname: Double\nfmode: Calculate\ncalc:\n  twice: qyt * 2\nkeep: [id, twice]\n"
	if err := os.WriteFile(filepath.Join(dir, "funcs.yml"), []byte(typo), 0o644); err != nil {
		t.Fatal(err)
	}
	res := Run(t, dir, 2*time.Minute, "run", dir, "--state", filepath.Join(dir, "state"), "--progress", "never")
	if res.Code != 1 || !strings.Contains(res.Stderr, "messages in a row failed and none succeeded") {
		t.Fatalf("exit %d, want 1 with the failure\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	dead, _ := deadLetterIDs(t, dir)
	if len(dead) < 100 || len(dead) > 1000 {
		t.Fatalf("%d dead letters; want the job stopped after about 100", len(dead))
	}
}

// Issue 10, finding 7: a row the sink rejects (text into a BIGINT column
// of PostgreSQL) is dead-lettered with the sink's error and every other row
// commits, in both delivery modes; the stream never stalls.
func TestRowTheSinkRejectsIsDeadLetteredAndTheRestCommits(t *testing.T) {
	t.Parallel()
	for _, delivery := range []string{"at-least-once", "exactly-once"} {
		t.Run(delivery, func(t *testing.T) {
			t.Parallel()
			const n, bad = 4999, 2001
			url := testenv.PostgresDatabase(t)
			db, err := sql.Open("pgx", url)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Exec("CREATE TABLE amounts (id BIGINT NOT NULL, amount BIGINT NOT NULL)"); err != nil {
				t.Fatal(err)
			}
			dir := fileToSQLite(t, n, delivery)
			lines := IDLines(n, func(i int) string {
				if i == bad {
					return fmt.Sprintf(`{"id":%d,"qty":"twelve"}`, i)
				}
				return fmt.Sprintf(`{"id":%d,"qty":%d}`, i, i%5)
			})
			files := map[string]string{
				"ids.jsonl": lines,
				"funcs.yml": "kistype: func\nfname: Double\nfmode: Verify\nfilter: id > 0\n",
				"conns.yml": "kistype: conn\ncname: ids\ntype: file\nparams:\n  path: ids.jsonl\n---\n" +
					"kistype: conn\ncname: db\ntype: postgres\nkey: amounts\nparams:\n  dsn: " + url + "\n  columns: id,amount=qty\n",
			}
			for name, data := range files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			res := Run(t, dir, 3*time.Minute, "run", dir, "--state", filepath.Join(dir, "state"), "--progress", "never")
			if res.Code != 0 {
				t.Fatalf("exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
			}
			counts := Counts(t, db, "SELECT id FROM amounts")
			if counts[bad] != 0 {
				t.Fatalf("the rejected row %d is in the table", bad)
			}
			counts[bad] = 1 // accounted for by its dead letter
			if problems := Check(counts, n, true); len(problems) > 0 {
				t.Fatalf("table: %v", problems)
			}
			dead := JSONLines(t, filepath.Join(dir, "state", "dead-letter", "Ids.jsonl"))
			if len(dead) != 1 || dead[0]["func"] != "sink db" || !strings.Contains(fmt.Sprint(dead[0]["error"]), "bigint") ||
				!strings.Contains(fmt.Sprint(dead[0]["payload"]), "twelve") {
				t.Fatalf("dead letters %v, want the one rejected row with the sink's error", dead)
			}
		})
	}
}

// Issue 10, findings 5 and 6: a Redis source whose server restarts is
// retried until it is back, and the source's own read deadlines are not
// failures; the job keeps running, says so once when the source goes and
// once when it is back, and every id reaches the sink.
func TestSourceRestartIsWeatherNotDeath(t *testing.T) {
	t.Parallel()
	srv := testenv.PrivateRedis(t)
	addr := fmt.Sprintf("127.0.0.1:%d", srv.Port())
	ctx := context.Background()
	publish := func(from, to int) {
		rc := goredis.NewClient(&goredis.Options{Addr: addr})
		defer rc.Close()
		for i := from; i <= to; i++ {
			if err := rc.XAdd(ctx, &goredis.XAddArgs{Stream: "in", Values: map[string]any{"id": i, "qty": i % 5}}).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	const n = 2000
	dir := fileToSQLite(t, n, "at-least-once")
	conns := "kistype: conn\ncname: ids\ntype: redis\naddrs: " + addr + "\nkey: in\nparams:\n  mode: stream\n  group: g\n  block: 200ms\n---\n" +
		sqliteOut("id")
	// Stream entries hold text: the flow passes them on as they are.
	funcs := "kistype: func\nfname: Double\nfmode: Verify\nfilter: id != \"\"\n"
	for name, data := range map[string]string{"conns.yml": conns, "funcs.yml": funcs} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	publish(1, n/2)
	p := Start(t, dir, nil, "run", dir, "--state", filepath.Join(dir, "state"), "--progress", "never")
	out := filepath.Join(dir, "out.db")
	// kisflow writes the database meanwhile: wait for its lock.
	db, err := sql.Open("sqlite", "file:"+out+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	distinct := func() int { return len(Counts(t, db, "SELECT id FROM out")) }
	Eventually(t, time.Minute, "the first half in the sink", func() bool { return distinct() == n/2 })
	srv.Restart(t)
	publish(n/2+1, n)
	Eventually(t, 2*time.Minute, "every id in the sink after the restart", func() bool {
		if p.Exited() {
			t.Fatalf("kisflow ended after the restart (exit %d):\n%s", p.Wait(0), p.Output())
		}
		return distinct() == n
	})
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(time.Minute); code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, p.Output())
	}
	if bad := Check(SQLiteCounts(t, out, "SELECT id FROM out"), n, false); len(bad) > 0 {
		t.Fatalf("sink: %v", bad)
	}
	// The client may ride out a short restart by itself; an outage the
	// runtime sees is logged once when it starts and once when it ends.
	logs := p.Stderr()
	if down, back := strings.Count(logs, "source ids unavailable"), strings.Count(logs, "source ids back after"); down > 1 || back != down {
		t.Fatalf("%d lines say the source went and %d that it came back, want at most one of each, paired:\n%s", down, back, logs)
	}
}
