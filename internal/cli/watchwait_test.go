package cli

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/internal/testenv"
)

// Under run --watch a flow whose connector is down waits on its own, as
// under plain run: the other flow runs, the watch loop applies changes,
// the API answers at once; a stop ends the wait, a start waits again,
// and a change of the waiting flow restarts it with the new
// configuration. The wait used to hold the watch loop and every API
// action, and a change made meanwhile was lost.
func TestWatchFlowWaitingForItsConnectorHoldsNothing(t *testing.T) {
	t.Parallel()
	dir, addr := waitingDir(t)
	cmd, done := childArgs(t, []string{"run", "--watch", dir, "--state", filepath.Join(dir, "state"), "--log-level", "warn"})
	c := apiClient{t: t, base: "http://" + addr}
	waitAPI(t, c, done)
	quick := quickAPI(t, c)
	waiting := func() bool {
		var pg struct {
			Status     string `json:"status"`
			WaitingFor string `json:"waiting_for"`
		}
		return c.try("GET", "/api/flows/PG", &pg) == 200 && pg.Status == "waiting" && pg.WaitingFor == "pg"
	}
	waitFor(t, "flow L to commit rows while PG waits", 30*time.Second, func() bool { return c.flow("L").Stats.Committed > 0 })
	waitFor(t, "flow PG shown waiting for connector pg", 10*time.Second, waiting)

	// A change of L is applied while PG waits.
	writeFiles(t, dir, map[string]string{"funcs.yml": passFunc + "kistype: func\nfname: PassL\nfmode: Calculate\ncalc: {seen: false}\n"})
	waitFor(t, "L's change to be applied while PG waits", 30*time.Second, func() bool {
		var l apiFlow // the admin server may be moving to a new engine: a refused GET is retried
		return c.try("GET", "/api/flows/L", &l) == 200 && l.Starts == 2 && l.Status == "running"
	})

	// A stop ends the wait; a start waits again; both answer at once.
	stopStartWaiting(t, c, quick)
	if code, f := quick("POST", "/api/flows/L/stop"); code != 200 || f.Status != "stopped" {
		t.Fatalf("POST stop of L while PG waits: %d, %+v", code, f)
	}

	// A change of the waiting flow restarts it with the new configuration.
	writeFiles(t, dir, map[string]string{"pg.yml": oneStepFlow("PG", "Pass", "gen2", "nothing")})
	waitFor(t, "PG to run with its new sink", 30*time.Second, func() bool {
		var f apiFlow // the admin server may be moving to a new engine: a refused GET is retried
		return c.try("GET", "/api/flows/PG", &f) == 200 && f.Status == "running" && f.Stats.Committed > 0
	})
	if out := cmd.Stdout.(*syncBuffer).String(); !strings.Contains(out, "watch: watching") {
		t.Errorf("the watch loop never said it watches:\n%s", out)
	} else if !strings.Contains(out, "watch: flow PG is unchanged: left waiting for its connector") {
		t.Errorf("the watch loop did not say that the waiting flow PG was left waiting when L changed:\n%s", out)
	}
}

// stopStartWaiting checks that flow PG, waiting for connector pg, stops
// and starts again (waiting again) through quick.
func stopStartWaiting(t *testing.T, c apiClient, quick func(method, path string) (int, apiFlow)) {
	t.Helper()
	waiting := func() bool {
		var pg struct {
			Status     string `json:"status"`
			WaitingFor string `json:"waiting_for"`
		}
		return c.try("GET", "/api/flows/PG", &pg) == 200 && pg.Status == "waiting" && pg.WaitingFor == "pg"
	}
	waitFor(t, "flow PG shown waiting for connector pg", 10*time.Second, waiting)
	if code, f := quick("POST", "/api/flows/PG/stop"); code != 200 || f.Status != "stopped" {
		t.Fatalf("POST stop of the waiting flow PG: %d, %+v, want 200 stopped", code, f)
	}
	var stopped struct {
		Status     string `json:"status"`
		WaitingFor string `json:"waiting_for"`
	}
	if c.try("GET", "/api/flows/PG", &stopped) == 200 && stopped.WaitingFor != "" {
		t.Errorf("flow PG stopped (status %q) still shows waiting_for %q", stopped.Status, stopped.WaitingFor)
	}
	if code, f := quick("POST", "/api/flows/PG/start"); code != 200 || (f.Status != "waiting" && f.Status != "starting") {
		t.Fatalf("POST start of PG, whose connector is down: %d, %+v, want 200 waiting", code, f)
	}
	waitFor(t, "flow PG waiting again after its start", 10*time.Second, waiting)
}

// waitingDir writes a configuration with two flows: L, which runs, and
// PG, whose sink (connector pg, a PostgreSQL on a closed port) is down.
// It returns the folder and the admin server's address.
func waitingDir(t *testing.T) (dir, addr string) {
	dir = t.TempDir()
	addr, global := adminGlobal(t)
	conns := fmt.Sprintf(`kistype: conn
cname: gen
type: generator
params: {format: map, rate: "200"}
---
kistype: conn
cname: gen2
type: generator
params: {format: map, rate: "200"}
---
kistype: conn
cname: nothing
type: discard
---
kistype: conn
cname: pg
type: postgres
key: t
params: {dsn: "postgres://postgres@127.0.0.1:%d/x?connect_timeout=2", columns: "id"}
---
`, closedPort(t))
	writeFiles(t, dir, map[string]string{
		"global.yml": global,
		"conns.yml":  conns,
		"funcs.yml":  passFunc + "kistype: func\nfname: PassL\nfmode: Calculate\ncalc: {seen: true}\n",
		"pg.yml":     oneStepFlow("PG", "Pass", "gen2", "pg"),
		"l.yml":      oneStepFlow("L", "PassL", "gen", "nothing"),
	})
	return dir, addr
}

// quickAPI returns a function that sends method path through c and fails
// the test when the answer does not come within 15s (the API used to
// hang on a waiting flow); it decodes the reply as a flow.
func quickAPI(t *testing.T, c apiClient) func(method, path string) (int, apiFlow) {
	return func(method, path string) (int, apiFlow) {
		t.Helper()
		req, _ := http.NewRequest(method, c.base+path, nil)
		resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		var f apiFlow
		_ = json.NewDecoder(resp.Body).Decode(&f)
		return resp.StatusCode, f
	}
}

// Under run --watch a change of the admin server's address alone, in the
// global file, moves the server to it: every flow restarts (the global
// file is part of each one's configuration) and the new engine opens the
// server. The plugins' settings were left out of the fingerprints, so
// the flows were "unchanged" and the server stayed where it was.
func TestWatchMovesTheAdminServerToItsNewAddress(t *testing.T) {
	t.Parallel()
	dir, addr := waitingDir(t)
	_, done := childArgs(t, []string{"run", "--watch", dir, "--state", filepath.Join(dir, "state"), "--log-level", "warn"})
	waitAPI(t, apiClient{t: t, base: "http://" + addr}, done)
	addr2, global2 := adminGlobal(t)
	writeFiles(t, dir, map[string]string{"global.yml": global2})
	c := apiClient{t: t, base: "http://" + addr2}
	waitFor(t, "the admin server to answer at its new address, L restarted", 30*time.Second, func() bool {
		var f apiFlow
		return c.try("GET", "/api/flows/L", &f) == 200 && f.Starts == 2 && f.Status == "running"
	})
	if _, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/api/flows"); err == nil {
		t.Errorf("the admin server still answers at its old address %s", addr)
	}
}

// A start through the API of a flow whose Redis server went down after
// its connector started waits for the server (status waiting) and answers
// at once; the flow runs once the server is back. Opening the source
// (creating the consumer group) failed at once with 500 and status failed.
func TestStartWaitsForASourceDownAfterItsConnectorStarted(t *testing.T) {
	t.Parallel()
	srv := testenv.PrivateRedis(t)
	dir := t.TempDir()
	addr, global := adminGlobal(t)
	writeFiles(t, dir, map[string]string{
		"global.yml": global,
		"all.yml": fmt.Sprintf(`kistype: conn
cname: rsrc
type: redis
addrs: 127.0.0.1:%d
key: kfwait:in
---
kistype: conn
cname: nothing
type: discard
---
`, srv.Port()) + passFunc + oneStepFlow("R", "Pass", "rsrc", "nothing"),
	})
	_, done := childWith(t, dir)
	c := apiClient{t: t, base: "http://" + addr}
	waitAPI(t, c, done)
	quick := quickAPI(t, c)
	waitFor(t, "flow R to run", 30*time.Second, func() bool { return c.flow("R").Status == "running" })
	if code, f := quick("POST", "/api/flows/R/stop"); code != 200 || f.Status != "stopped" {
		t.Fatalf("POST stop: %d %+v", code, f)
	}
	back := make(chan struct{})
	go func() { defer close(back); srv.Down(t, 6*time.Second) }()
	time.Sleep(2 * time.Second) // the server is down
	if code, f := quick("POST", "/api/flows/R/start"); code != 200 || (f.Status != "waiting" && f.Status != "starting") {
		t.Fatalf("POST start while Redis is down: %d %+v, want 200 waiting", code, f)
	}
	if f := c.flow("R"); f.Status != "waiting" {
		t.Fatalf("flow R is %s while Redis is down, want waiting", f.Status)
	}
	<-back
	waitFor(t, "flow R to run once Redis is back", 30*time.Second, func() bool { return c.flow("R").Status == "running" })
}
