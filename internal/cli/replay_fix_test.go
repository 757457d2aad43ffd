package cli

import (
	"database/sql"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// send sends method path with the headers given (name, value pairs) and
// returns the status code and the body.
func (c apiClient) send(method, path string, headers ...string) (int, string) {
	c.t.Helper()
	req := c.request(method, path)
	for i := 0; i+1 < len(headers); i += 2 {
		if strings.EqualFold(headers[i], "Host") {
			req.Host = headers[i+1]
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A replay that fails as a whole leaves each of its letters in one place:
// FLOW.replaying.jsonl, which the next replay feeds again in full. It used
// to dead-letter the letters that failed again into a new FLOW.jsonl as
// well, so that a later replay fed those copies again and wrote their
// rows twice (more after several failed replays).
func TestFailedReplayKeepsEachLetterOnce(t *testing.T) {
	t.Parallel()
	dir, base := adminDir(t, 100)
	flows := filepath.Join(dir, "flows.yml")
	text, err := os.ReadFile(flows)
	if err != nil {
		t.Fatal(err)
	}
	// The replay of gated letters (all of them fail) stops after 3.
	changed := strings.Replace(string(text), "  retry_duration: 1\n", "  retry_duration: 1\n  max_consecutive_failures: 3\n", 1)
	if err := os.WriteFile(flows, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	gateFile := filepath.Join(dir, "gate-closed")
	if err := os.WriteFile(gateFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, done := childWith(t, dir, "KISFLOW_TEST_GATE="+gateFile)
	api := apiClient{t: t, base: base}
	waitAPI(t, api, done)
	waitFor(t, "Gen to dead-letter 8 gated rows", 30*time.Second, func() bool { return api.flow("Gen").Stats.DeadLettered >= 8 })
	var stopped apiFlow
	if code := api.do("POST", "/api/flows/Gen/stop", &stopped); code != 200 {
		t.Fatalf("POST stop: %d", code)
	}
	letters := filepath.Join(dir, "state", "dead-letter")
	n := int(stopped.Stats.DeadLettered)
	if got := lines(t, filepath.Join(letters, "Gen.jsonl")); got != n {
		t.Fatalf("Gen.jsonl holds %d letters, the job dead-lettered %d", got, n)
	}

	// Two replays fail (the gate is closed): the letters stay in the
	// replaying file only, and the answer says where they are.
	for i := range 2 {
		code, body := api.send("POST", "/api/flows/Gen/dead-letters/replay")
		if code != http.StatusInternalServerError {
			t.Fatalf("replay %d with the gate closed: %d %s, want 500", i+1, code, body)
		}
		if got := lines(t, filepath.Join(letters, "Gen.jsonl")); got != 0 {
			t.Fatalf("after failed replay %d, Gen.jsonl holds %d letters, want none (they are in Gen.replaying.jsonl)", i+1, got)
		}
		if got := lines(t, filepath.Join(letters, "Gen.replaying.jsonl")); got != n {
			t.Fatalf("after failed replay %d, Gen.replaying.jsonl holds %d letters, want %d", i+1, got, n)
		}
		if _, err := os.Stat(filepath.Join(letters, "Gen.failed-again.jsonl")); !os.IsNotExist(err) {
			t.Fatalf("after failed replay %d, Gen.failed-again.jsonl is left (%v)", i+1, err)
		}
		if !strings.Contains(body, "Gen.replaying.jsonl (and only there)") {
			t.Errorf("replay %d with the gate closed: %s, want the error to say the letters are in Gen.replaying.jsonl only", i+1, body)
		}
	}

	// With the gate open the letters are replayed once, and a second
	// replay finds none.
	if err := os.Remove(gateFile); err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Replayed     int
		Out          int64
		Resumed      bool
		DeadLettered int64 `json:"dead_lettered"`
	}
	if code := api.do("POST", "/api/flows/Gen/dead-letters/replay", &rep); code != 200 || rep.Replayed != n || rep.Out != int64(n) || !rep.Resumed || rep.DeadLettered != 0 {
		t.Fatalf("replay with the gate open: %d %+v, want %d replayed, resumed", code, rep, n)
	}
	rep.Replayed = -1
	if code := api.do("POST", "/api/flows/Gen/dead-letters/replay", &rep); code != 200 || rep.Replayed != 0 {
		t.Fatalf("a second replay: %d %+v, want nothing replayed", code, rep)
	}
	if got := lines(t, filepath.Join(letters, "Gen.replayed.jsonl")); got != n {
		t.Fatalf("Gen.replayed.jsonl holds %d letters, want %d", got, n)
	}
	db, err := sql.Open("sqlite", filepath.Join(dir, "out.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var dups int
	if err := db.QueryRow("SELECT count(*) FROM (SELECT CAST(id AS INTEGER) i FROM out GROUP BY i HAVING count(*) > 1)").Scan(&dups); err != nil {
		t.Fatal(err)
	}
	if dups != 0 {
		t.Errorf("%d ids are in the sink more than once", dups)
	}
}

// A replay committed before a crash (its replaying file renamed) is
// finished by the next one, once: the letters that failed again join
// FLOW.jsonl without repeating those a merge cut short had added already,
// and a replaying file left by a replay that did not commit keeps its
// letters, what that replay wrote apart being discarded.
func TestReplayFilesAfterACrash(t *testing.T) {
	state := t.TempDir()
	rf := newReplayFiles(state, "F")
	if err := os.MkdirAll(filepath.Dir(rf.letters), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(path, text string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	a := `{"letter_id":"a","payload":{"id":1}}` + "\n"
	b := `{"letter_id":"b","payload":{"id":2}}` + "\n"
	c := `{"letter_id":"c","payload":{"id":3}}` + "\n"
	// Crashed after the commit, in the middle of the merge: FLOW.jsonl
	// holds a letter written since, then a of the letters that failed
	// again, then a line torn by the crash.
	write(rf.done, a+b+c)
	write(rf.failedAgain, a+b)
	write(rf.letters, c+a+`{"letter_id":"b","pay`)
	if err := rf.finish(); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(rf.letters)
	if want := c + a + `{"letter_id":"b","pay` + "\n" + b; string(got) != want {
		t.Fatalf("FLOW.jsonl after the finish:\n%s\nwant\n%s", got, want)
	}
	if got, _ := os.ReadFile(rf.replayed); string(got) != a+b+c {
		t.Fatalf("FLOW.replayed.jsonl: %q", got)
	}
	for _, p := range []string{rf.done, rf.failedAgain} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s is left after the finish (%v)", p, err)
		}
	}
	if err := rf.finish(); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(rf.letters); string(again) != string(got) {
		t.Fatalf("a second finish changed FLOW.jsonl: %q", again)
	}
	// Crashed before the commit: the replaying file holds every letter.
	write(rf.replaying, a+b)
	write(rf.failedAgain, a)
	if err := rf.discardFailedAgain(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(rf.failedAgain); !os.IsNotExist(err) {
		t.Fatalf("%s is kept (%v)", rf.failedAgain, err)
	}
}

// Without a token, the admin server on localhost refuses what a web page
// of another site could send it: a request that changes something from
// another origin (cross-site request forgery: it used to stop the flow),
// and any request under a name that is not local (DNS rebinding: it used
// to read the API). curl, which sends no Origin, still stops the flow.
func TestAdminRefusesOtherSites(t *testing.T) {
	t.Parallel()
	dir, base := adminDir(t, 50)
	_, done := childWith(t, dir)
	api := apiClient{t: t, base: base}
	waitAPI(t, api, done)
	port := base[strings.LastIndexByte(base, ':')+1:]
	for _, c := range []struct {
		what    string
		method  string
		path    string
		headers []string
		word    string
	}{
		{"a stop from another site under the attacker's name", "POST", "/api/flows/Gen/stop",
			[]string{"Origin", "https://evil.example", "Content-Type", "text/plain", "Host", "attacker.example:" + port}, "DNS rebinding"},
		{"a stop from another site", "POST", "/api/flows/Gen/stop", []string{"Origin", "https://evil.example", "Content-Type", "text/plain"}, "another origin"},
		{"a replay a browser marks cross-site", "POST", "/api/flows/Gen/dead-letters/replay", []string{"Sec-Fetch-Site", "cross-site"}, "another origin"},
		{"a read under a rebound name", "GET", "/api/flows", []string{"Host", "attacker.example:" + port}, "DNS rebinding"},
		{"a state read under a rebound name", "GET", "/state/Gen/1", []string{"Host", "attacker.example:" + port}, "DNS rebinding"},
	} {
		code, body := api.send(c.method, c.path, c.headers...)
		if code != http.StatusForbidden || !strings.Contains(body, c.word) {
			t.Errorf("%s: %d %s, want 403 saying %q", c.what, code, body, c.word)
		}
	}
	if f := api.flow("Gen"); f.Status != "running" {
		t.Fatalf("Gen is %s after the refused requests, want running", f.Status)
	}
	if code, body := api.send("GET", "/api/flows/Gen", "Host", "localhost:"+port); code != 200 {
		t.Errorf("GET under localhost: %d %s", code, body)
	}
	if code, body := api.send("POST", "/api/flows/Gen/stop", "Origin", base); code != 200 {
		t.Errorf("a stop from the inspector's own origin: %d %s", code, body)
	}
	if code, body := api.send("POST", "/api/flows/Other/stop"); code != 200 {
		t.Errorf("a stop without Origin (curl): %d %s", code, body)
	}
}

// GET /state/{flow}/{key} follows a flow stopped and started through the
// API, as GET /api/flows/{flow}/state/{key} does: under run --watch it
// answered 404 (no running job holds keyed state) once the flow's new job
// ran on an engine other than the admin server's.
func TestStateRouteFollowsARestartedFlow(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	addr, global := adminGlobal(t)
	writeFiles(t, dir, map[string]string{
		"global.yml": global,
		"flows.yml":  "kistype: flow\nstatus: 1\nflow_name: V\nflows:\n  - fname: CountState\nstream:\n  source: gen\n  sink: nothing\n",
		"funcs.yml":  "kistype: func\nfname: CountState\nfmode: Calculate\n",
		"conns.yml":  "kistype: conn\ncname: gen\ntype: generator\nparams: {format: map, rate: \"100\"}\n---\nkistype: conn\ncname: nothing\ntype: discard\n",
	})
	_, done := childArgs(t, []string{"run", "--watch", dir, "--state", filepath.Join(dir, "state"), "--log-level", "warn"})
	api := apiClient{t: t, base: "http://" + addr}
	waitAPI(t, api, done)
	both := func(what string) {
		t.Helper()
		waitFor(t, what, 30*time.Second, func() bool {
			code1, _ := api.send("GET", "/api/flows/V/state/0")
			code2, _ := api.send("GET", "/state/V/0")
			return code1 == 200 && code2 == 200
		})
	}
	both("both state routes to answer for V")
	for _, action := range []string{"stop", "start"} {
		if code, body := api.send("POST", "/api/flows/V/"+action); code != 200 {
			t.Fatalf("POST /api/flows/V/%s: %d %s", action, code, body)
		}
	}
	both("both state routes to answer for V's new job")
	if code, body := api.send("GET", "/state/Nope/0"); code != 404 || !strings.Contains(body, "Nope") {
		t.Errorf("GET /state/Nope/0: %d %s, want 404 naming the flow", code, body)
	}
	if code, _ := api.send("POST", "/state/V/0"); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /state/V/0: %d, want 405", code)
	}
}

// A KISFLOW_ADMIN_TOKEN of whitespace only (or around the token) is
// refused at start, saying why: no client can send it, and the admin API
// used to answer every request 401 without a word.
func TestAdminTokenOfWhitespaceIsRefused(t *testing.T) {
	for _, token := range []string{"   ", "s3cret\n"} {
		t.Run(strings.TrimSpace(token), func(t *testing.T) {
			t.Setenv("KISFLOW_ADMIN_TOKEN", token)
			dir := t.TempDir()
			_, global := adminGlobal(t)
			writeFiles(t, dir, map[string]string{
				"global.yml": global,
				"all.yml": "kistype: flow\nstatus: 1\nflow_name: F\nflows:\n  - fname: Pass\nstream:\n  source: gen\n  sink: out\n---\n" + passFunc +
					"kistype: conn\ncname: gen\ntype: generator\nparams: {count: \"3\", format: map}\n---\nkistype: conn\ncname: out\ntype: discard\n",
			})
			code, _, stderr := run(t, "run", dir, "--state", filepath.Join(dir, "state"), "--progress", "never")
			if code == 0 || !strings.Contains(stderr, "KISFLOW_ADMIN_TOKEN") || !strings.Contains(stderr, "whitespace") {
				t.Fatalf("exit %d, stderr:\n%s\nwant a failure naming KISFLOW_ADMIN_TOKEN and its whitespace", code, stderr)
			}
		})
	}
}
