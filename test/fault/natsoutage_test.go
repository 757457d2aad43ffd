package fault

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestANATSOutageIsReported stops the NATS server a running exactly-once
// job (NATS -> SQLite) reads from for 15 s: the job logs once that its
// source is unavailable, /readyz answers 503 and
// kisflow_stream_connected{side="source"} is 0 meanwhile, the log, /readyz
// and the metric say it is back once NATS is (before any new message), and
// every id is in the sink once. Before, the pull
// consumer only timed out: nothing reported the outage.
func TestANATSOutageIsReported(t *testing.T) {
	t.Parallel()
	const half, n = 1000, 1500
	work := t.TempDir()
	r := rigOf(t, "nats")(t, work)
	dir := idFlow(t, "exactly-once", r.source+"---\n"+r.sink)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	admin := ln.Addr().String()
	ln.Close()
	global := fmt.Sprintf("kistype: global\nplugins:\n  metrics:\n    admin:\n      listen: %s\n", admin)
	if err := os.WriteFile(filepath.Join(dir, "global.yml"), []byte(global), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := r.publish(1, half); err != nil {
		t.Fatal(err)
	}
	p := Start(t, dir, nil, "run", dir, "--state", filepath.Join(work, "state"), "--progress", "never", "--log-level", "info")
	count := func() int { return total(r.ids()) }
	waitProgress(t, p, time.Minute, 0, count, "before the job stored its first row")
	get := func(path string) (int, string) {
		c := http.Client{Timeout: 5 * time.Second}
		res, err := c.Get("http://" + admin + path)
		if err != nil {
			return 0, err.Error()
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(body)
	}
	connected := func() string {
		_, body := get("/metrics")
		for _, line := range strings.Split(body, "\n") {
			if strings.HasPrefix(line, "kisflow_stream_connected{") && strings.Contains(line, `side="source"`) {
				return line[strings.LastIndexByte(line, ' ')+1:]
			}
		}
		return "(none)"
	}
	Eventually(t, time.Minute, "the admin server says the source is connected and the job ready", func() bool {
		code, _ := get("/readyz")
		return code == http.StatusOK && connected() == "1"
	})

	back := make(chan struct{})
	go func() {
		defer close(back)
		r.down(t, 15*time.Second)
	}()
	// Looked for while the server is down (the goroutine must end before
	// the test fails: it starts the server again).
	var logged, unready, disconnected bool
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline) && !(logged && unready && disconnected); time.Sleep(100 * time.Millisecond) {
		code, _ := get("/readyz")
		logged = logged || strings.Contains(p.Output(), "source in unavailable: ")
		unready = unready || code == http.StatusServiceUnavailable
		disconnected = disconnected || connected() == "0"
	}
	<-back
	if !logged || !unready || !disconnected {
		t.Fatalf("during the outage: logged %v, /readyz 503 %v, kisflow_stream_connected 0 %v; output:\n%s", logged, unready, disconnected, tail(p.Output(), 4000))
	}
	// Back before any new message comes.
	Eventually(t, time.Minute, "the source back in the log, /readyz and kisflow_stream_connected", func() bool {
		code, _ := get("/readyz")
		return strings.Contains(p.Output(), "source in back after ") && code == http.StatusOK && connected() == "1"
	})
	if err := r.publish(half+1, n); err != nil {
		t.Fatal(err)
	}
	waitAllIDs(t, p, 3*time.Minute, r.ids, n, "after a 15s outage of NATS")
	// Once; twice when the client reconnected for a moment to the server
	// shutting down (a change of state the log tells too).
	if n := strings.Count(p.Output(), "source in unavailable: "); n < 1 || n > 2 {
		t.Errorf("the outage was logged %d times, want once (twice for a flap):\n%s", n, tail(p.Output(), 4000))
	}
	stopCleanly(t, p)
	c, err := r.ids()
	if err != nil {
		t.Fatal(err)
	}
	if bad := Check(c, n, true); len(bad) > 0 {
		t.Fatalf("after a 15s outage of NATS: %v", bad)
	}
}
