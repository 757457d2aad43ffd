package cli

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A flow whose connector is down at start-up waits on its own: the other
// flow runs meanwhile, and the admin API shows the first one waiting for
// the connector. It used to hold every flow and the console until it
// connected.
func TestFlowWaitingForItsConnectorDoesNotHoldTheOthers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	files := map[string]string{
		"global.yml": "kistype: global\nplugins:\n  metrics:\n    admin: {listen: \"" + addr + "\"}\n",
		"all.yml": fmt.Sprintf(`kistype: conn
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
kistype: func
fname: Pass
fmode: Calculate
calc: {seen: true}
---
kistype: flow
status: 1
flow_name: PG
flows: [{fname: Pass}]
stream: {source: gen2, sink: pg}
---
kistype: flow
status: 1
flow_name: L
flows: [{fname: Pass}]
stream: {source: gen, sink: nothing}
`, closedPort(t)),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, done := childWith(t, dir)
	c := apiClient{t: t, base: "http://" + addr}
	waitAPI(t, c, done)
	waitFor(t, "flow L to commit rows while PG waits", 30*time.Second, func() bool {
		return c.flow("L").Stats.Committed > 0
	})
	var pg struct {
		Status     string `json:"status"`
		WaitingFor string `json:"waiting_for"`
	}
	waitFor(t, "flow PG shown waiting for connector pg", 10*time.Second, func() bool {
		pg.Status, pg.WaitingFor = "", ""
		return c.do("GET", "/api/flows/PG", &pg) == 200 && pg.Status == "waiting" && pg.WaitingFor == "pg"
	})
	if l := c.flow("L"); l.Status != "running" {
		t.Fatalf("flow L is %s, want running", l.Status)
	}
}
