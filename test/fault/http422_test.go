package fault

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/internal/testenv"
)

// startIngest writes a config folder (an http source on a free port -> the
// flow Ingest of the functions in funcs -> the connector db of dbConn, with
// the given delivery), starts `kisflow run` on it and returns the folder,
// the process and a client of its source.
func startIngest(t *testing.T, delivery, funcs, dbConn string) (string, *Proc, *ingestClient) {
	t.Helper()
	var steps strings.Builder
	for _, m := range regexp.MustCompile(`(?m)^fname: (\w+)$`).FindAllStringSubmatch(funcs, -1) {
		steps.WriteString("  - fname: " + m[1] + "\n")
	}
	dir := Dir(t, map[string]string{
		"flow.yml": "kistype: flow\nstatus: 1\nflow_name: Ingest\nflows:\n" + steps.String() +
			"stream:\n  source: api\n  sink: db\n  delivery: " + delivery + "\n  linger: 20ms\n  retry_times: 0\n",
		"funcs.yml": funcs,
		"conns.yml": "kistype: conn\ncname: api\ntype: http\naddrs: 127.0.0.1:0\nkey: /ingest\nparams:\n  timeout: 2m\n---\n" + dbConn,
	})
	p := Start(t, dir, nil, "run", dir, "--state", filepath.Join(dir, "state"), "--progress", "never", "--log-level", "info")
	p.WaitFor("http source listening", time.Minute)
	m := regexp.MustCompile(`addr=(127\.0\.0\.1:\d+)`).FindStringSubmatch(p.Output())
	if m == nil {
		t.Fatalf("no address in the log:\n%s", p.Output())
	}
	return dir, p, newIngestClient("http://" + m[1] + "/ingest")
}

// answer422 is the body of a 422 answer.
type answer422 struct {
	Accepted     int `json:"accepted"`
	DeadLettered int `json:"dead_lettered"`
	Errors       []struct {
		Row   int    `json:"row"`
		Func  string `json:"func"`
		Error string `json:"error"`
	} `json:"errors"`
}

// want422 checks that a request of n rows was answered 422 naming exactly
// the rows dead (by position), each by function fn with an error
// containing errPart.
func want422(t *testing.T, code int, body string, n int, dead []int, fn, errPart string) {
	t.Helper()
	if code != 422 {
		t.Fatalf("answer %d %s, want 422 naming rows %v", code, body, dead)
	}
	var a answer422
	if err := json.Unmarshal([]byte(body), &a); err != nil {
		t.Fatalf("answer %s: %v", body, err)
	}
	var rows []int
	for _, e := range a.Errors {
		rows = append(rows, e.Row)
		if e.Func != fn || !strings.Contains(e.Error, errPart) {
			t.Errorf("row %d named with func %q, error %q; want func %q and an error with %q", e.Row, e.Func, e.Error, fn, errPart)
		}
	}
	if !slices.Equal(rows, dead) || a.DeadLettered != len(dead) || a.Accepted != n-len(dead) {
		t.Fatalf("answer %s: want rows %v named, %d dead-lettered, %d accepted", body, dead, len(dead), n-len(dead))
	}
}

// stopIngest ends the job in dir with SIGTERM and checks that it wrote
// one dead letter for each of the n rows named in its answers.
func stopIngest(t *testing.T, dir string, p *Proc, n int) {
	t.Helper()
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(time.Minute); code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, p.Output())
	}
	if dead := JSONLines(t, filepath.Join(dir, "state", "dead-letter", "Ingest.jsonl")); len(dead) != n {
		t.Fatalf("%d dead letters, want %d: %v", len(dead), n, dead)
	}
}

// Issue 10: a request whose rows pass the first function and are rejected
// by the second (a calc on a text qty), in a batch of several messages, is
// answered 422 naming exactly those rows; the other rows are in the sink.
func TestHTTP422NamesRowsALaterFunctionRejects(t *testing.T) {
	t.Parallel()
	for _, delivery := range []string{"at-least-once", "exactly-once"} {
		t.Run(delivery, func(t *testing.T) {
			t.Parallel()
			funcs := "kistype: func\nfname: Valid\nfmode: Verify\nfilter: id > 0\n---\n" +
				"kistype: func\nfname: Double\nfmode: Calculate\ncalc:\n  twice: qty * 2\nkeep: [id, twice]\n"
			dir, p, c := startIngest(t, delivery, funcs,
				"kistype: conn\ncname: db\ntype: sqlite\nkey: out\nparams:\n  path: out.db\n  create: \"true\"\n  columns: id,twice\n")
			const n = 40
			dead := []int{0, 7, 8, 23, 39}
			ids := idRange(1, n)
			var body strings.Builder
			for i, id := range ids {
				qty := fmt.Sprint(id % 7)
				if slices.Contains(dead, i) {
					qty = `"x"`
				}
				fmt.Fprintf(&body, "{\"id\":%d,\"qty\":%s}\n", id, qty)
			}
			code, answer := c.post(t, "application/x-ndjson", ids, body.String())
			want422(t, code, answer, n, dead, "Double", "calc twice")
			// A second request, all good, is answered 200.
			if code, answer := c.post(t, "application/x-ndjson", []int{1001}, `{"id":1001,"qty":2}`); code != 200 {
				t.Fatalf("a good request: %d %s", code, answer)
			}
			stopIngest(t, dir, p, len(dead))
			counts := SQLiteCounts(t, filepath.Join(dir, "out.db"), "SELECT id FROM out")
			for i, id := range ids {
				if want := map[bool]int{true: 0, false: 1}[slices.Contains(dead, i)]; counts[int64(id)] != want {
					t.Errorf("id %d (row %d) is in the sink %d times, want %d", id, i, counts[int64(id)], want)
				}
			}
		})
	}
}

// Issue 10: a request some of whose rows the sink refuses (text into a
// BIGINT column of PostgreSQL), after two functions ran on a batch of
// several messages, is answered 422 naming exactly those rows with the
// sink's error; the other rows are in the table.
func TestHTTP422NamesRowsTheSinkRefuses(t *testing.T) {
	t.Parallel()
	for _, delivery := range []string{"at-least-once", "exactly-once"} {
		t.Run(delivery, func(t *testing.T) {
			t.Parallel()
			url := testenv.PostgresDatabase(t)
			db, err := sql.Open("pgx", url)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Exec("CREATE TABLE amounts (id BIGINT NOT NULL, amount BIGINT NOT NULL)"); err != nil {
				t.Fatal(err)
			}
			funcs := "kistype: func\nfname: Valid\nfmode: Verify\nfilter: id > 0\n---\n" +
				"kistype: func\nfname: Tag\nfmode: Calculate\ncalc:\n  n: id + 0\nkeep: [id, qty]\n"
			dir, p, c := startIngest(t, delivery, funcs,
				"kistype: conn\ncname: db\ntype: postgres\nkey: amounts\nparams:\n  dsn: "+url+"\n  columns: id,amount=qty\n")
			const n = 40
			dead := []int{1, 2, 16, 38}
			ids := idRange(1, n)
			var body strings.Builder
			for i, id := range ids {
				qty := fmt.Sprint(id % 5)
				if slices.Contains(dead, i) {
					qty = `"twelve"`
				}
				fmt.Fprintf(&body, "{\"id\":%d,\"qty\":%s}\n", id, qty)
			}
			code, answer := c.post(t, "application/x-ndjson", ids, body.String())
			want422(t, code, answer, n, dead, "sink db", "bigint")
			if code, answer := c.post(t, "application/x-ndjson", []int{1001}, `{"id":1001,"qty":2}`); code != 200 {
				t.Fatalf("a good request: %d %s", code, answer)
			}
			stopIngest(t, dir, p, len(dead))
			counts := Counts(t, db, "SELECT id FROM amounts")
			for i, id := range ids {
				if want := map[bool]int{true: 0, false: 1}[slices.Contains(dead, i)]; counts[int64(id)] != want {
					t.Errorf("id %d (row %d) is in the table %d times, want %d", id, i, counts[int64(id)], want)
				}
			}
		})
	}
}

// One client cannot stop ingest for everyone: a request whose 150 rows all
// fail a calc (more than the default max_consecutive_failures, 100) is
// answered 422, and the job goes on: the next request is answered 200.
func TestHTTPEveryRowOfARequestFailingLeavesTheJobServing(t *testing.T) {
	t.Parallel()
	for _, delivery := range []string{"at-least-once", "exactly-once"} {
		t.Run(delivery, func(t *testing.T) {
			t.Parallel()
			funcs := "kistype: func\nfname: Double\nfmode: Calculate\ncalc:\n  twice: qty * 2\nkeep: [id, twice]\n"
			dir, p, c := startIngest(t, delivery, funcs,
				"kistype: conn\ncname: db\ntype: sqlite\nkey: out\nparams:\n  path: out.db\n  create: \"true\"\n  columns: id,twice\n")
			const n = 150
			ids := idRange(1, n)
			var body strings.Builder
			dead := make([]int, n)
			for i, id := range ids {
				dead[i] = i
				fmt.Fprintf(&body, "{\"id\":%d,\"qty\":\"x\"}\n", id)
			}
			code, answer := c.post(t, "application/x-ndjson", ids, body.String())
			want422(t, code, answer, n, dead, "Double", "calc twice")
			if code, answer := c.post(t, "application/x-ndjson", []int{1001}, `{"id":1001,"qty":2}`); code != 200 {
				t.Fatalf("a good request after the failing one: %d %s\n%s", code, answer, p.Output())
			}
			stopIngest(t, dir, p, n)
			if counts := SQLiteCounts(t, filepath.Join(dir, "out.db"), "SELECT id FROM out"); len(counts) != 1 || counts[1001] != 1 {
				t.Fatalf("sink holds %v, want id 1001 once", counts)
			}
		})
	}
}

// Exactly-once from a source whose messages carry neither an ID nor a
// position (http) is at-least-once: lint says so, as a warning at the
// stream's delivery line, and so does `kisflow run` when it starts.
func TestHTTPExactlyOnceIsALintWarning(t *testing.T) {
	t.Parallel()
	funcs := "kistype: func\nfname: Double\nfmode: Calculate\ncalc:\n  twice: qty * 2\nkeep: [id, twice]\n"
	dir, p, c := startIngest(t, "exactly-once", funcs,
		"kistype: conn\ncname: db\ntype: sqlite\nkey: out\nparams:\n  path: out.db\n  create: \"true\"\n  columns: id,twice\n")
	const want = `flow.yml:9: warning: flow "Ingest": exactly-once from source "api" (type http) is at-least-once`
	if !strings.Contains(p.Output(), want) {
		t.Errorf("run does not warn %q:\n%s", want, p.Output())
	}
	if code, answer := c.post(t, "application/x-ndjson", []int{1}, `{"id":1,"qty":2}`); code != 200 {
		t.Fatalf("a good request: %d %s", code, answer)
	}
	stopIngest(t, dir, p, 0)
	lint := Run(t, dir, time.Minute, "lint", dir)
	if lint.Code != 0 || !strings.Contains(lint.Stdout+lint.Stderr, want) {
		t.Fatalf("lint exit %d, want 0 with %q:\n%s%s", lint.Code, want, lint.Stdout, lint.Stderr)
	}
	// At-least-once from the same source: no such warning.
	flow := filepath.Join(dir, "flow.yml")
	b, err := os.ReadFile(flow)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(flow, []byte(strings.Replace(string(b), "exactly-once", "at-least-once", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if lint := Run(t, dir, time.Minute, "lint", dir); strings.Contains(lint.Stdout+lint.Stderr, "is at-least-once") {
		t.Fatalf("at-least-once warned:\n%s%s", lint.Stdout, lint.Stderr)
	}
}

// The other sources whose messages carry neither an ID nor a position,
// mqtt and stdin, warn the same way; a file source, whose position the
// runtime stores, does not.
func TestExactlyOnceFromUnidentifiedSourcesIsALintWarning(t *testing.T) {
	t.Parallel()
	flow := func(name, src string) string {
		return "kistype: flow\nstatus: 1\nflow_name: " + name + "\nflows: []\nstream:\n  source: " + src + "\n  sink: db\n  delivery: exactly-once\n"
	}
	dir := Dir(t, map[string]string{
		"conns.yml": "kistype: conn\ncname: m\ntype: mqtt\nkey: a/b\n---\nkistype: conn\ncname: in\ntype: stdin\n" +
			"---\nkistype: conn\ncname: f\ntype: file\nkey: in.jsonl\n" +
			"---\nkistype: conn\ncname: db\ntype: sqlite\nkey: out\nparams:\n  path: out.db\n  create: \"true\"\n  columns: id\n",
		"flows.yml": flow("FromMQTT", "m") + "---\n" + flow("FromStdin", "in") + "---\n" + flow("FromFile", "f"),
	})
	lint := Run(t, dir, time.Minute, "lint", dir)
	out := lint.Stdout + lint.Stderr
	for _, want := range []string{
		`warning: flow "FromMQTT": exactly-once from source "m" (type mqtt) is at-least-once`,
		`warning: flow "FromStdin": exactly-once from source "in" (type stdin) is at-least-once`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("lint lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, `"FromFile": exactly-once`) {
		t.Errorf("lint warns of the file source:\n%s", out)
	}
}
