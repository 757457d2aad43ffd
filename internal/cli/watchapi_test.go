package cli

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAdminAPIUnderWatch drives the admin API of `kisflow run --watch`
// while flows are reloaded: a changed flow shows its new job, a new flow
// appears and a removed one goes, a flow stopped through the API stays
// stopped across a reload that does not change it, its dead letters are
// replayed and it is started again; the admin server stays up throughout
// (the restarted flows run although another engine holds its address).
func TestAdminAPIUnderWatch(t *testing.T) {
	dir, base := adminDir(t, 200)
	gateFile := filepath.Join(dir, "gate-closed")
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("gate-closed", "")
	_, done := childArgs(t, []string{"run", "--watch", dir, "--state", filepath.Join(dir, "state"), "--log-level", "warn"},
		"KISFLOW_ADMIN_TOKEN=s3cret", "KISFLOW_TEST_GATE="+gateFile)
	api := apiClient{t: t, base: base, token: "s3cret"}
	waitAPI(t, api, done)

	waitFor(t, "both flows to be listed running", 30*time.Second, func() bool {
		var list struct{ Flows []apiFlow }
		return api.do("GET", "/api/flows", &list) == 200 && len(list.Flows) == 2 &&
			list.Flows[0].Status == "running" && list.Flows[1].Status == "running"
	})
	waitFor(t, "Gen to dead-letter gated rows", 30*time.Second, func() bool { return api.flow("Gen").Stats.DeadLettered >= 2 })
	if code := (apiClient{t: t, base: base}).do("GET", "/api/flows", nil); code != http.StatusUnauthorized {
		t.Errorf("GET /api/flows without the token: %d, want 401", code)
	}
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "KisFlow inspector") {
		t.Fatalf("GET /: %d\n%s", resp.StatusCode, page)
	}

	// Change Other's function: its new job shows (starts 2) and counts;
	// Gen's job is left alone.
	funcs, err := os.ReadFile(filepath.Join(dir, "funcs.yml"))
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(funcs), "fname: Pass\nfmode: Calculate\ncalc:\n  seen: true", "fname: Pass\nfmode: Calculate\ncalc:\n  seen: false", 1)
	if changed == string(funcs) {
		t.Fatal("the test's funcs.yml has no Pass to change")
	}
	write("funcs.yml", changed)
	waitFor(t, "Other's new job to run and count", 30*time.Second, func() bool {
		f := api.flow("Other")
		return f.Starts == 2 && f.Status == "running" && f.Stats.Committed > 0 && len(f.Steps) == 1 && f.Steps[0].In > 0
	})
	if g := api.flow("Gen"); g.Starts != 1 || g.Status != "running" {
		t.Fatalf("Gen after Other's change: %+v, want its first job running", g)
	}

	// A new flow appears; once its file is removed it goes.
	write("third.yml", "kistype: flow\nstatus: 1\nflow_name: Third\nflows:\n  - fname: Pass\nstream:\n  source: gen2\n  sink: nothing\n")
	waitFor(t, "flow Third to be listed and run", 30*time.Second, func() bool {
		var f apiFlow
		return api.do("GET", "/api/flows/Third", &f) == 200 && f.Status == "running" && f.Stats.Committed > 0
	})
	if err := os.Remove(filepath.Join(dir, "third.yml")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "flow Third to leave the list", 30*time.Second, func() bool {
		return api.do("GET", "/api/flows/Third", nil) == http.StatusNotFound
	})

	// Stop Gen through the API; a reload that does not change it leaves
	// it stopped.
	var stopped apiFlow
	if code := api.do("POST", "/api/flows/Gen/stop", &stopped); code != 200 || stopped.Status != "stopped" {
		t.Fatalf("POST /api/flows/Gen/stop: %d, %+v", code, stopped)
	}
	write("funcs.yml", string(funcs)) // Other changes back
	// Gen held stopped, the engine that holds the admin server runs no
	// flow: the server moves to Other's new engine, and does not answer
	// for that moment.
	waitFor(t, "Other's third job", 30*time.Second, func() bool {
		var f apiFlow
		return api.try("GET", "/api/flows/Other", &f) == 200 && f.Starts == 3 && f.Status == "running"
	})
	if g := api.flow("Gen"); g.Status != "stopped" || g.Stats.Committed != stopped.Stats.Committed {
		t.Fatalf("Gen after a reload that does not change it: %+v, want it stopped at %d", g, stopped.Stats.Committed)
	}

	// Its dead letters are replayed, then it starts again.
	if err := os.Remove(gateFile); err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Replayed     int
		DeadLettered int64 `json:"dead_lettered"`
	}
	if code := api.do("POST", "/api/flows/Gen/dead-letters/replay", &rep); code != 200 || rep.Replayed != int(stopped.Stats.DeadLettered) || rep.DeadLettered != 0 {
		t.Fatalf("replay: %d, %+v, want %d replayed", code, rep, stopped.Stats.DeadLettered)
	}
	var started apiFlow
	if code := api.do("POST", "/api/flows/Gen/start", &started); code != 200 || started.Status != "running" || started.Starts != 2 {
		t.Fatalf("POST /api/flows/Gen/start: %d, %+v", code, started)
	}
	waitFor(t, "Gen to commit after its start", 20*time.Second, func() bool { return api.flow("Gen").Stats.Committed > 5 })
	if code := api.do("POST", "/api/flows/Gen/start", nil); code != http.StatusConflict {
		t.Errorf("POST start of a running flow: %d, want 409", code)
	}
}

// The warning of an admin server that listens beyond localhost without a
// token reaches stderr whole: the redaction of secrets in the log (a
// value after "token:") does not eat its words.
func TestAdminWarningBeyondLocalhost(t *testing.T) {
	t.Setenv("KISFLOW_ADMIN_TOKEN", "")
	dir := t.TempDir()
	files := map[string]string{
		"global.yml": "kistype: global\nplugins:\n  metrics:\n    admin: {listen: \"0.0.0.0:0\"}\n",
		"flow.yml":   "kistype: flow\nstatus: 1\nflow_name: F\nflows:\n  - fname: Keep\nstream:\n  source: gen\n  sink: out\n",
		"func.yml":   "kistype: func\nfname: Keep\nfmode: Calculate\ncalc:\n  seen: true\n",
		"conns.yml":  "kistype: conn\ncname: gen\ntype: generator\nparams: {count: \"3\", format: map}\n---\nkistype: conn\ncname: out\ntype: discard\n",
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	code, _, stderr := run(t, "run", dir, "--progress", "never")
	if code != 0 || !strings.Contains(stderr, "no bearer token is set, so anyone who reaches 0.0.0.0:0 can stop flows") {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
}

// try is do for a server that may not answer for a moment: a request that
// fails answers 0.
func (c apiClient) try(method, path string, v any) int {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	if resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(v) != nil {
		return 0
	}
	return resp.StatusCode
}
