package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/connector/all"
)

// BenchmarkInspectorCost measures what the web inspector costs a running
// job: `kisflow run` (in this process) of a bounded generator (1M map
// rows, two workers) -> one expression step -> discard, each iteration in
// a fresh folder, with no page (nopage), with a client that does what the
// page asks of the server, GET /api/flows every second (poll), and with a
// headless chromium showing the inspector, which polls so and redraws
// each flow's graph (page). It reports rows/s; the page variant needs
// chromium.
//
//	go test ./internal/cli -run '^$' -bench BenchmarkInspectorCost -benchtime 3x
func BenchmarkInspectorCost(b *testing.B) {
	for _, with := range []string{"nopage", "poll", "page"} {
		b.Run(with, func(b *testing.B) { benchInspector(b, with) })
	}
}

func benchInspector(b *testing.B, with string) {
	const rows = 1_000_000
	reg := kisflow.NewRegistry()
	if err := all.Install(reg); err != nil {
		b.Fatal(err)
	}
	addr, global := adminGlobal(b)
	files := map[string]string{
		"global.yml": global,
		"flow.yml":   "kistype: flow\nstatus: 1\nflow_name: Load\nflows:\n  - fname: Double\nstream:\n  source: gen\n  sink: out\n  workers: 2\n  batch_size: 2000\n",
		"func.yml":   "kistype: func\nfname: Double\nfmode: Calculate\ncalc:\n  twice: id * 2\nkeep: [id, twice]\n",
		"conns.yml": fmt.Sprintf("kistype: conn\ncname: gen\ntype: generator\nparams:\n  count: \"%d\"\n  format: map\n---\n"+
			"kistype: conn\ncname: out\ntype: discard\n", rows),
	}
	// run runs the flow once in a fresh folder; ready, when set, is
	// called once the admin API answers.
	run := func(ready func()) {
		b.StopTimer()
		dir := b.TempDir()
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		done := make(chan int, 1)
		go func() {
			done <- MainContext(context.Background(), reg, []string{"run", dir, "--progress", "never", "--log-level", "error"}, io.Discard, io.Discard)
		}()
		if ready != nil {
			waitListening(b, addr)
			ready()
		}
		if code := <-done; code != 0 {
			b.Fatalf("kisflow run exited %d", code)
		}
	}
	switch with {
	case "nopage":
		run(nil) // as the page variant, one run before the timed ones
		b.ResetTimer()
		for range b.N {
			run(nil)
		}
		reportRows(b, rows)
		return
	case "poll":
		stop := make(chan struct{})
		polled := make(chan int)
		go func() {
			n := 0
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-stop:
					polled <- n
					return
				case <-t.C:
				}
				if resp, err := http.Get("http://" + addr + "/api/flows"); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == 200 {
						n++
					}
				}
			}
		}()
		run(nil)
		b.ResetTimer()
		for range b.N {
			run(nil)
		}
		b.StopTimer()
		close(stop)
		if n := <-polled; n == 0 {
			b.Fatal("no poll of GET /api/flows was answered")
		}
		reportRows(b, rows)
		return
	}
	ctx := browser(b)
	// The first run loads the page; it goes on polling the same address
	// through the runs that follow (and between them, failing).
	run(func() {
		if _, err := chromedp.Run(ctx, chromedp.Navigate("http://"+addr+"/")); err != nil {
			b.Fatalf("load the inspector: %v", err)
		}
		if _, err := chromedp.Run(ctx, chromedp.WaitVisible(chromedp.CSS(`section[data-flow="Load"]`))); err != nil {
			b.Fatalf("the inspector shows no flow Load: %v", err)
		}
	})
	b.ResetTimer()
	for range b.N {
		run(nil)
	}
	b.StopTimer()
	status, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#status")))
	b.Logf("the page's last poll: %q (%v)", status, err)
	reportRows(b, rows)
}

// waitListening waits until addr accepts connections.
func waitListening(b *testing.B, addr string) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("nothing listens on %s after 30s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// reportRows reports rows per iteration as rows/s.
func reportRows(b *testing.B, rows int) {
	b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}
