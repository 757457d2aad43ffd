package cli

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow"
)

// gate fails a batch holding a row whose id is a multiple of 10 while the
// file $KISFLOW_TEST_GATE exists: with batch_size 1 those rows are
// dead-lettered after their retries, and once the file is gone a replay
// of them succeeds.
func gate(_ context.Context, f kisflow.Flow, rows []any) error {
	if g := os.Getenv("KISFLOW_TEST_GATE"); g != "" {
		if _, err := os.Stat(g); err == nil {
			for _, r := range rows {
				if id := rowID(r); id%10 == 0 {
					return fmt.Errorf("gate closed for id %d", id)
				}
			}
		}
	}
	return f.CommitRowBatch(rows)
}

// rowID reads the id of a generator row, as read (a map with an int64) or
// replayed from a dead letter (a float64 from JSON).
func rowID(r any) int64 {
	m, ok := r.(map[string]any)
	if !ok {
		return -1
	}
	switch v := m["id"].(type) {
	case int64:
		return v
	case int:
		return int64(v)
	case float64:
		return int64(v)
	case json.Number:
		n, _ := v.Int64()
		return n
	}
	return -1
}

// adminDir writes a configuration with two unbounded flows: Gen
// (generator -> Gate -> Keep(id) -> SQLite out.db, batch_size 1) and
// Other (generator -> discard), and the admin server on a free port,
// which it returns as a base URL.
func adminDir(t *testing.T, rate int) (dir, base string) {
	t.Helper()
	dir = t.TempDir()
	addr, global := adminGlobal(t)
	files := map[string]string{
		"global.yml": global,
		"flows.yml": `kistype: flow
status: 1
flow_name: Gen
flows:
  - fname: Gate
  - fname: Keep
stream:
  source: gen
  sink: db
  batch_size: 1
  retry_times: 1
  retry_duration: 1
---
kistype: flow
status: 1
flow_name: Other
flows:
  - fname: Pass
stream:
  source: gen2
  sink: nothing
`,
		"funcs.yml": `kistype: func
fname: Gate
fmode: Calculate
---
kistype: func
fname: Keep
fmode: Calculate
calc:
  seen: true
keep: [id]
---
kistype: func
fname: Pass
fmode: Calculate
calc:
  seen: true
keep: [id]
`,
		"conns.yml": fmt.Sprintf(`kistype: conn
cname: gen
type: generator
params:
  format: map
  rate: "%d"
---
kistype: conn
cname: gen2
type: generator
params:
  format: map
  rate: "%d"
---
kistype: conn
cname: nothing
type: discard
---
kistype: conn
cname: db
type: sqlite
key: out
params:
  path: out.db
  create: "true"
  columns: id
`, rate, rate),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, "http://" + addr
}

// adminGlobal returns a free local address and a global file whose
// admin server (a metrics plugin) listens there.
func adminGlobal(t testing.TB) (addr, global string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	ln.Close()
	return addr, "kistype: global\nplugins:\n  metrics:\n    admin: {listen: \"" + addr + "\"}\n"
}

// childWith starts `kisflow run DIR` (this test binary as kisflow) with
// the extra environment env; it is stopped with SIGTERM at the end of the
// test, and waitChild waits for it.
func childWith(t *testing.T, dir string, env ...string) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	return childArgs(t, []string{"run", dir, "--state", filepath.Join(dir, "state"), "--log-level", "warn"}, env...)
}

// childArgs starts kisflow with the command line cmdline (this test
// binary as kisflow) and the extra environment env, as childWith does.
func childArgs(t *testing.T, cmdline []string, env ...string) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	args, _ := json.Marshal(cmdline)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), "KISFLOW_TEST_CHILD="+string(args)), env...)
	out := newSyncBuffer()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("child output:\n%s", out.String())
		}
	})
	return cmd, done
}

// apiClient calls the admin API with a token ("" for none).
type apiClient struct {
	t     *testing.T
	base  string
	token string
}

// do sends method path and decodes a JSON reply into v (when not nil);
// it returns the status code.
func (c apiClient) do(method, path string, v any) int {
	c.t.Helper()
	resp, err := http.DefaultClient.Do(c.request(method, path))
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, v); err != nil {
			c.t.Fatalf("%s %s: %v\n%s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

// request is a request of method path, with the token when there is one.
func (c apiClient) request(method, path string) *http.Request {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req
}

type apiFlow struct {
	Name       string           `json:"name"`
	Status     string           `json:"status"`
	Error      string           `json:"error"`
	RowsPerSec float64          `json:"rows_per_sec"`
	Starts     int              `json:"starts"`
	Stats      kisflow.JobStats `json:"stats"`
	Steps      []struct {
		kisflow.StepStats
		RowsPerSec float64 `json:"rows_per_sec"`
		BusyRatio  float64 `json:"busy_ratio"`
	} `json:"steps"`
	CheckpointAge *float64 `json:"checkpoint_age_seconds"`
	Graph         struct {
		Source string   `json:"source"`
		Steps  []string `json:"steps"`
		Sink   string   `json:"sink"`
	} `json:"graph"`
}

func (c apiClient) flow(name string) apiFlow {
	c.t.Helper()
	var f apiFlow
	if code := c.do("GET", "/api/flows/"+name, &f); code != 200 {
		c.t.Fatalf("GET /api/flows/%s: %d", name, code)
	}
	return f
}

// waitFor polls cond every 50ms for up to wait.
func waitFor(t *testing.T, what string, wait time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", wait, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitAPI waits until the child's admin API answers.
func waitAPI(t *testing.T, c apiClient, done <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-done:
			t.Fatal("kisflow run ended before its admin API answered")
		default:
		}
		req, _ := http.NewRequest("GET", c.base+"/api/flows", nil)
		req.Header.Set("Authorization", "Bearer "+c.token)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the admin API did not answer within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAdminAPI drives a real kisflow run through its admin API: the list,
// the token, 404s and 405s, stopping one flow while the other runs on,
// reading its dead letters, replaying them (each once: it is in the sink
// once, and a second replay finds none) and starting it again from its
// committed position.
func TestAdminAPI(t *testing.T) {
	dir, base := adminDir(t, 400)
	gateFile := filepath.Join(dir, "gate-closed")
	if err := os.WriteFile(gateFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, done := childWith(t, dir, "KISFLOW_ADMIN_TOKEN=s3cret", "KISFLOW_TEST_GATE="+gateFile)
	api := apiClient{t: t, base: base, token: "s3cret"}
	waitAPI(t, api, done)

	// The token: 401 without it or with another; open endpoints stay open.
	anon := apiClient{t: t, base: base}
	for _, c := range []apiClient{anon, {t: t, base: base, token: "wrong"}} {
		for _, p := range []string{"/api/flows", "/api/flows/Gen", "/api/openapi.json", "/state/Gen/1"} {
			if code := c.do("GET", p, nil); code != http.StatusUnauthorized {
				t.Errorf("GET %s with token %q: %d, want 401", p, c.token, code)
			}
		}
		if code := c.do("POST", "/api/flows/Gen/stop", nil); code != http.StatusUnauthorized {
			t.Errorf("POST stop with token %q: %d, want 401", c.token, code)
		}
	}
	if code := anon.do("GET", "/healthz", nil); code != 200 {
		t.Errorf("GET /healthz without a token: %d, want 200", code)
	}
	// 404s and 405s.
	for _, p := range []string{"/api/flows/Nope", "/api/flows/Nope/dead-letters", "/api/nothing", "/nothing"} {
		if code := api.do("GET", p, nil); code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, code)
		}
	}
	if resp, err := http.Get(base + "/nothing"); err != nil || resp.StatusCode != http.StatusNotFound || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("GET /nothing: %v, %v: want a JSON 404", resp, err)
	} else {
		resp.Body.Close()
	}
	if code := api.do("POST", "/api/flows/Nope/stop", nil); code != http.StatusNotFound {
		t.Errorf("POST /api/flows/Nope/stop: %d, want 404", code)
	}
	for _, mp := range [][2]string{{"GET", "/api/flows/Gen/stop"}, {"DELETE", "/api/flows"}, {"PUT", "/api/flows/Gen"}, {"GET", "/api/flows/Gen/dead-letters/replay"}} {
		if code := api.do(mp[0], mp[1], nil); code != http.StatusMethodNotAllowed {
			t.Errorf("%s %s: %d, want 405", mp[0], mp[1], code)
		}
	}

	// The list: both flows run, with their graphs, and their numbers move.
	var list struct{ Flows []apiFlow }
	if code := api.do("GET", "/api/flows", &list); code != 200 || len(list.Flows) != 2 {
		t.Fatalf("GET /api/flows: %d, %+v", code, list)
	}
	g := list.Flows[0]
	if g.Name != "Gen" || g.Status != "running" || g.Graph.Source != "gen" || !slices.Equal(g.Graph.Steps, []string{"Gate", "Keep"}) || g.Graph.Sink != "db" {
		t.Fatalf("flow Gen: %+v", g)
	}
	waitFor(t, "Gen to dead-letter 3 rows and show a rate", 30*time.Second, func() bool {
		f := api.flow("Gen")
		return f.Stats.DeadLettered >= 3 && f.RowsPerSec > 0
	})
	// Each step's counters: Gate fails the gated rows (retried once, then
	// dead-lettered), Keep takes the others.
	waitFor(t, "Gen's steps to show their rates", 10*time.Second, func() bool {
		f := api.flow("Gen")
		return len(f.Steps) == 2 && f.Steps[0].RowsPerSec > 0 && f.Steps[1].RowsPerSec > 0
	})
	gs := api.flow("Gen")
	gate, keep := gs.Steps[0], gs.Steps[1]
	if gate.Func != "Gate" || keep.Func != "Keep" {
		t.Fatalf("Gen's steps: %+v", gs.Steps)
	}
	if gate.Errors < 3 || gate.Retries < 3 || gate.Dead < 3 || gate.In <= keep.In || keep.In == 0 || gate.Calls == 0 {
		t.Errorf("step Gate: %+v, step Keep: %+v: want Gate's errors, retries and dead letters, and more rows into Gate than into Keep", gate, keep)
	}
	if keep.Errors != 0 || keep.Dead != 0 || keep.Out > keep.In {
		t.Errorf("step Keep: %+v, want no errors and no more rows out than in", keep)
	}
	if gs.CheckpointAge == nil || *gs.CheckpointAge < 0 || *gs.CheckpointAge > 30 {
		t.Errorf("Gen's checkpoint age: %v, want a few seconds at most", gs.CheckpointAge)
	}

	// Stop Gen: it drains and stays stopped while Other runs on.
	var stopped apiFlow
	if code := api.do("POST", "/api/flows/Gen/stop", &stopped); code != 200 || stopped.Status != "stopped" {
		t.Fatalf("POST stop: %d, %+v", code, stopped)
	}
	if code := api.do("POST", "/api/flows/Gen/stop", nil); code != http.StatusConflict {
		t.Errorf("POST stop of a stopped flow: %d, want 409", code)
	}
	before := api.flow("Other").Stats.Committed
	time.Sleep(700 * time.Millisecond)
	if f := api.flow("Gen"); f.Status != "stopped" || f.Stats.Committed != stopped.Stats.Committed {
		t.Fatalf("Gen went on after its stop: %+v (stopped at %d)", f, stopped.Stats.Committed)
	}
	if f := api.flow("Other"); f.Status != "running" || f.Stats.Committed <= before {
		t.Fatalf("Other did not run on while Gen was stopped: %+v (was %d)", f, before)
	}

	// Its dead letters: each a gated id.
	var dl struct {
		Total   int
		Letters []struct {
			Error   string
			Payload map[string]any
		}
	}
	if code := api.do("GET", "/api/flows/Gen/dead-letters?limit=1000", &dl); code != 200 {
		t.Fatalf("GET dead-letters: %d", code)
	}
	if dl.Total != int(stopped.Stats.DeadLettered) || len(dl.Letters) != dl.Total {
		t.Fatalf("dead letters: total %d, %d listed, the job dead-lettered %d", dl.Total, len(dl.Letters), stopped.Stats.DeadLettered)
	}
	var gated []int64
	for _, l := range dl.Letters {
		id := rowID(l.Payload)
		if id%10 != 0 || !strings.Contains(l.Error, "gate closed") {
			t.Fatalf("letter %+v is not a gated row", l)
		}
		gated = append(gated, id)
	}
	var page struct {
		Total, Offset int
		Letters       []json.RawMessage
	}
	if code := api.do("GET", "/api/flows/Gen/dead-letters?offset=1&limit=1", &page); code != 200 || page.Total != dl.Total || len(page.Letters) != 1 {
		t.Errorf("a page of dead letters: %d, %+v", code, page)
	}
	if code := api.do("GET", "/api/flows/Gen/dead-letters?limit=x", nil); code != http.StatusBadRequest {
		t.Errorf("a bad limit: %d, want 400", code)
	}

	// Replay: refused while running (Other), then each letter once.
	if code := api.do("POST", "/api/flows/Other/dead-letters/replay", nil); code != http.StatusConflict {
		t.Errorf("replay of a running flow: %d, want 409", code)
	}
	if err := os.Remove(gateFile); err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Replayed     int
		Out          int64
		DeadLettered int64 `json:"dead_lettered"`
	}
	if code := api.do("POST", "/api/flows/Gen/dead-letters/replay", &rep); code != 200 || rep.Replayed != len(gated) || rep.DeadLettered != 0 || rep.Out != int64(len(gated)) {
		t.Fatalf("replay: %d, %+v, want %d replayed", code, rep, len(gated))
	}
	if code := api.do("GET", "/api/flows/Gen/dead-letters", &dl); code != 200 || dl.Total != 0 {
		t.Fatalf("after the replay: %d, %d dead letters left", code, dl.Total)
	}
	if code := api.do("POST", "/api/flows/Gen/dead-letters/replay", &rep); code != 200 || rep.Replayed != 0 {
		t.Fatalf("a second replay: %d, %+v, want nothing replayed", code, rep)
	}
	if n := lines(t, filepath.Join(dir, "state", "dead-letter", "Gen.replayed.jsonl")); n != len(gated) {
		t.Fatalf("Gen.replayed.jsonl holds %d letters, want %d", n, len(gated))
	}

	// Start Gen again: a new job from its committed position.
	var started apiFlow
	// POST start answers at once; the new job may still be starting.
	code := api.do("POST", "/api/flows/Gen/start", &started)
	for end := time.Now().Add(10 * time.Second); code == 200 && started.Status == "starting" && time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
		code = api.do("GET", "/api/flows/Gen", &started)
	}
	if code != 200 || started.Status != "running" || started.Starts != 2 {
		t.Fatalf("POST start: %d, %+v", code, started)
	}
	if code := api.do("POST", "/api/flows/Gen/start", nil); code != http.StatusConflict {
		t.Errorf("POST start of a running flow: %d, want 409", code)
	}
	waitFor(t, "Gen to commit after its start", 20*time.Second, func() bool { return api.flow("Gen").Stats.Committed > 20 })

	// Each replayed row is in the sink once; no row is there twice.
	_ = api.do("POST", "/api/flows/Gen/stop", nil)
	db, err := sql.Open("sqlite", filepath.Join(dir, "out.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, id := range gated {
		var n int
		if err := db.QueryRow("SELECT count(*) FROM out WHERE CAST(id AS INTEGER) = ?", id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("replayed id %d is in the sink %d times, want once", id, n)
		}
	}
	var dups int
	if err := db.QueryRow("SELECT count(*) FROM (SELECT CAST(id AS INTEGER) i FROM out GROUP BY i HAVING count(*) > 1)").Scan(&dups); err != nil {
		t.Fatal(err)
	}
	if dups != 0 {
		t.Errorf("%d ids are in the sink more than once", dups)
	}
}

func lines(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
	}
	return n
}

// TestOpenAPIListsEveryRoute checks that the OpenAPI document names every
// route the admin API serves, and no other.
func TestOpenAPIListsEveryRoute(t *testing.T) {
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi %q, want 3.x", doc.OpenAPI)
	}
	var served, documented []string
	for _, r := range routes {
		served = append(served, r.method+" "+r.pattern)
	}
	for p, ops := range doc.Paths {
		for m := range ops {
			if m == "parameters" {
				continue
			}
			documented = append(documented, strings.ToUpper(m)+" "+p)
		}
	}
	slices.Sort(served)
	slices.Sort(documented)
	if !slices.Equal(served, documented) {
		t.Fatalf("routes served:\n  %s\nroutes in openapi.json:\n  %s", strings.Join(served, "\n  "), strings.Join(documented, "\n  "))
	}
}
