package remote_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStopDuringAnUnavailableStepIsPrompt: `kisflow run` stopped (SIGINT)
// while its remote step has no provider of the version it asks for exits
// within seconds, not after the drain timeout, with its batches returned
// to the source unacknowledged: the next run (the version fixed) reads
// and writes every row, once into an exactly-once sink.
func TestStopDuringAnUnavailableStepIsPrompt(t *testing.T) {
	t.Parallel()
	for _, tc := range bothDeliveries {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url, bucket, service := freshRegistry(t)
			pdir := writeFiles(t, map[string]string{"funcs.yml": providerYAML})
			serving(t, pdir, "--service", service, "--registry", url, "--bucket", bucket, "--ttl", "3s")
			cdir := callerDir(t, url, bucket, service, tc.sink, tc.delivery)
			conns := filepath.Join(cdir, "conns.yml")
			data, _ := os.ReadFile(conns)
			if err := os.WriteFile(conns, bytes.Replace(data, []byte("  retries: 2\n"), []byte("  retries: 2\n  version: \"9\"\n"), 1), 0o644); err != nil {
				t.Fatal(err)
			}
			const total = 300
			run := start(t, "run", cdir, "--log-level", "info", "--progress", "never")
			feed(t, cdir, 0, total, 10*time.Millisecond, nil)
			waitFor(t, run, "function Price unavailable", 20*time.Second)
			_ = run.cmd.Process.Signal(syscall.SIGINT)
			stopped := time.Now()
			code := run.wait(t, 40*time.Second)
			if took := time.Since(stopped); took > 5*time.Second {
				t.Fatalf("run took %s to exit after SIGINT with its remote step unavailable, want a few seconds: %s", took.Round(time.Millisecond), run.output())
			}
			if code != 4 || !strings.Contains(run.output(), "function Price unavailable for") {
				t.Fatalf("run exited %d, want 4 (batches returned to the source) saying the function was unavailable: %s", code, run.output())
			}
			read := readFileRows
			if tc.delivery == "exactly-once" {
				read = readDBRows
			}
			if n := len(read(t, cdir)); n != 0 {
				t.Fatalf("%d rows came out while no provider served the version asked for", n)
			}
			if err := os.WriteFile(conns, data, 0o644); err != nil { // any version
				t.Fatal(err)
			}
			again := start(t, "run", cdir, "--log-level", "info", "--progress", "never")
			var seen map[int]int
			for deadline := time.Now().Add(30 * time.Second); len(seen) < total && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				seen = read(t, cdir)
			}
			_ = again.cmd.Process.Signal(syscall.SIGTERM)
			code = again.wait(t, 20*time.Second)
			seen = read(t, cdir)
			if len(seen) != total || code != 0 {
				t.Fatalf("the next run wrote %d of %d rows (exit %d): %s", len(seen), total, code, again.output())
			}
			for id, n := range seen {
				if n > 1 && tc.delivery == "exactly-once" {
					t.Fatalf("row %d written %d times into an exactly-once sink", id, n)
				}
			}
		})
	}
}

// TestDryRunChecksTheFunctionsAndReachesStaticProviders: kisflow dry-run
// fails a remote connector when no provider serves a function a flow's
// step calls through it, naming the function and what is served, and a
// static provider address that is not a KisFlow provider (the NATS port);
// a static address where `kisflow serve` listens is ok.
func TestDryRunChecksTheFunctionsAndReachesStaticProviders(t *testing.T) {
	t.Parallel()
	url, bucket, service := freshRegistry(t)
	pdir := writeFiles(t, map[string]string{"funcs.yml": providerYAML})
	serving(t, pdir, "--service", service, "--registry", url, "--bucket", bucket, "--ttl", "3s")
	_, addr := serving(t, pdir, "--registry", "none", "--listen", "127.0.0.1:0")
	static := func(addrs string) string {
		return "kistype: conn\ncname: pricing\ntype: remote\naddrs: " + addrs + "\nparams:\n  registry: static\n"
	}
	quote := "---\nkistype: func\nfname: Quote\nfmode: Calculate\noption:\n  cname: pricing\n" +
		"---\nkistype: flow\nstatus: 1\nflow_name: Quotes\nflows:\n  - fname: Quote\n"
	natsPort := strings.TrimPrefix(url, "nats://")
	for _, tc := range []struct{ name, conn, more, want string }{
		{"served", natsPricing(url, service, bucket, ""), "", ": ok"},
		{"function not served", natsPricing(url, service, bucket, ""), quote, `function "Quote": none of the 1 providers of service "` + service + `" serves it (they serve Price)`},
		{"static provider", static(addr), "", ": ok"},
		{"static NATS port", static(natsPort), "", "provider " + natsPort + " does not answer as a KisFlow provider"},
	} {
		dir := writeFiles(t, map[string]string{"conns.yml": tc.conn, "flow.yml": remotePrice + "---\n" + ordersFlow + tc.more})
		code, out, line := dryRunPricing(t, dir)
		wantCode := 1
		if tc.want == ": ok" {
			wantCode = 0
		}
		if code != wantCode || !strings.Contains(line, tc.want) {
			t.Errorf("%s: dry-run exit %d, %s; want exit %d with %q", tc.name, code, out, wantCode, tc.want)
		}
		t.Logf("%s: %s", tc.name, line)
	}
}
