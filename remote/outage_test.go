package remote_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/internal/testenv"
	"github.com/kisflow-go/kisflow/remote"
	"github.com/kisflow-go/kisflow/stream"
)

// fileSink is the connector out: a file, out.jsonl.
const fileSink = "kistype: conn\ncname: out\ntype: file\nparams:\n  path: out.jsonl\n"

// callerDir is the folder of a `kisflow run` flow that reads rows from
// in.jsonl (followed), prices them through the remote function Price of
// service at the NATS registry url, and writes them to the connector out
// of sink, with delivery.
func callerDir(t *testing.T, url, bucket, service, sink, delivery string) string {
	t.Helper()
	return writeFiles(t, map[string]string{
		"in.jsonl":  "",
		"conns.yml": followIn + sink + "---\n" + natsPricing(url, service, bucket, "  loadbalance: round_robin\n  retries: 2\n  timeout: 2s\n"),
		"flow.yml":  remotePrice + "---\n" + ordersFlow + "stream:\n  source: in\n  sink: out\n  batch_size: 20\n  linger: 5ms\n  delivery: " + delivery + "\n"})
}

// feed appends rows from..to-1 to the caller's input, 50 every pace, and
// calls at(i) before each group of 50 rows starting at i.
func feed(t *testing.T, dir string, from, to int, pace time.Duration, at func(i int)) {
	t.Helper()
	in, err := os.OpenFile(filepath.Join(dir, "in.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	for i := from; i < to; i += 50 {
		if at != nil {
			at(i)
		}
		var buf bytes.Buffer
		for j := i; j < min(i+50, to); j++ {
			fmt.Fprintf(&buf, "{\"id\":%d,\"amount\":%d}\n", j, j)
		}
		if _, err := in.Write(buf.Bytes()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(pace)
	}
}

// allOut waits until the caller wrote total rows, stops it and returns
// its output; it fails the test unless every row came out once at least
// and none was dead-lettered.
func allOut(t *testing.T, dir string, run *proc, total int, within time.Duration) string {
	t.Helper()
	seen := map[int]int{}
	deadline := time.Now().Add(within)
	for len(seen) < total && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		seen = readFileRows(t, dir)
	}
	_ = run.cmd.Process.Signal(syscall.SIGTERM)
	code := run.wait(t, 20*time.Second)
	out := run.output()
	if len(seen) != total {
		t.Fatalf("%d of %d rows came out (run exit %d): %s", len(seen), total, code, out)
	}
	if dl, _ := os.ReadFile(filepath.Join(dir, ".kisflow", "dead-letter", "Orders.jsonl")); len(dl) > 0 {
		t.Fatalf("rows were dead-lettered:\n%s\nrun: %s", dl, out)
	}
	if code != 0 {
		t.Fatalf("run exited %d: %s", code, out)
	}
	return out
}

// TestRegistryOutageKeepsTheProviders: the NATS registry is SIGKILLed and
// down for longer than the providers' TTL while a flow calls three of
// them: the caller keeps the last known providers (the registry could
// deliver no refresh), and once the registry is back it follows it again
// at once (the watch's consumer died with the server): no provider is ever
// missed, a provider started after the restart gets calls within about
// two seconds, no row is held or dead-lettered, and the run's exit is
// quiet.
func TestRegistryOutageKeepsTheProviders(t *testing.T) {
	t.Parallel()
	nats, url, bucket, service := privateRegistry(t)
	args := []string{"--service", service, "--registry", url, "--bucket", bucket, "--ttl", "2s"}
	named := func(name string) string {
		return writeFiles(t, map[string]string{"funcs.yml": fmt.Sprintf("kistype: func\nfname: Price\nfmode: Calculate\ncalc:\n  price: amount * 2\n  by: '%q'\n", name)})
	}
	for _, name := range []string{"A", "B", "C"} {
		serving(t, named(name), args...)
	}
	cdir := callerDir(t, url, bucket, service, fileSink, "at-least-once")
	run := start(t, "run", cdir, "--log-level", "info", "--progress", "never")
	const total = 6000
	down := make(chan struct{})
	var back, added, firstCall time.Time
	byN := func() bool {
		for _, rs := range readByRows(t, cdir) {
			for _, r := range rs {
				if r.By == "N" {
					return true
				}
			}
		}
		return false
	}
	feed(t, cdir, 0, total, 100*time.Millisecond, func(i int) { // for 12s
		switch {
		case i == 500:
			go func() { defer close(down); nats.Crash(t, 4500*time.Millisecond); back = time.Now() }()
		case i < 500 || !isClosed(down):
		case added.IsZero() && time.Since(back) >= 2*time.Second:
			serving(t, named("N"), args...)
			added = time.Now()
		case !added.IsZero() && firstCall.IsZero() && byN():
			firstCall = time.Now()
		}
	})
	<-down
	out := allOut(t, cdir, run, total, 30*time.Second)
	if strings.Contains(out, "unavailable") || strings.Contains(out, "no provider") {
		t.Fatalf("the caller lost its providers around the registry's outage: %s", out)
	}
	if added.IsZero() {
		t.Fatalf("the feed ended before the provider added after the restart started")
	}
	if firstCall.IsZero() {
		t.Fatalf("the provider started %s after the registry came back got no call: %s", added.Sub(back).Round(time.Millisecond), out)
	}
	if d := firstCall.Sub(added); d > 2500*time.Millisecond {
		t.Fatalf("the provider started after the registry came back got its first call %s later, want about 2s at most", d.Round(time.Millisecond))
	}
	for _, bad := range []string{"ERROR", "close connector"} {
		if strings.Contains(out, bad) {
			t.Fatalf("the run logged %q: %s", bad, out)
		}
	}
}

// isClosed reports whether ch is closed.
func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestDirectoryClosesQuicklyAroundARegistryRestart: a directory closed
// while its NATS server is down, or just after it restarted (the watch's
// consumer lost with it, the client reconnected), closes at once and
// without an error.
func TestDirectoryClosesQuicklyAroundARegistryRestart(t *testing.T) {
	t.Parallel()
	nats, url, bucket, service := privateRegistry(t)
	open := func() remote.Directory {
		d, err := remote.WatchNATS(context.Background(), url, bucket, service, "", "")
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	closeQuickly := func(d remote.Directory, when string) {
		t.Helper()
		start := time.Now()
		err := d.Close()
		if took := time.Since(start); err != nil || took > time.Second {
			t.Errorf("closed %s: %v after %s, want nil at once", when, err, took.Round(time.Millisecond))
		}
	}
	whileDown, afterRestart := open(), open()
	back := make(chan struct{})
	go func() { defer close(back); nats.Crash(t, 2*time.Second) }()
	time.Sleep(time.Second)
	closeQuickly(whileDown, "while the registry is down")
	<-back
	time.Sleep(2500 * time.Millisecond) // the client reconnects (2s wait)
	closeQuickly(afterRestart, "just after the registry restarted")
}

// TestNoProviderIsAnOutage: the only provider of a service is SIGKILLed
// mid-stream and comes back seconds later (after its registration
// expired): the stream waits the outage out, logging it, and every row
// comes out computed with none dead-lettered.
func TestNoProviderIsAnOutage(t *testing.T) {
	t.Parallel()
	url, bucket, service := freshRegistry(t)
	pdir := writeFiles(t, map[string]string{"funcs.yml": providerYAML})
	args := []string{"--service", service, "--registry", url, "--bucket", bucket, "--ttl", "1s"}
	p, _ := serving(t, pdir, args...)
	cdir := callerDir(t, url, bucket, service, fileSink, "at-least-once")
	run := start(t, "run", cdir, "--log-level", "info", "--progress", "never")
	const total = 2000
	var killed time.Time
	feed(t, cdir, 0, total, 20*time.Millisecond, func(i int) {
		if i == 500 {
			_ = p.cmd.Process.Kill()
			killed = time.Now()
		}
	})
	time.Sleep(time.Until(killed.Add(3 * time.Second))) // past the 1s TTL: no provider is listed
	serving(t, pdir, args...)
	out := allOut(t, cdir, run, total, 40*time.Second)
	for _, want := range []string{"function Price unavailable", "function Price back after"} {
		if !strings.Contains(out, want) {
			t.Fatalf("the run did not log %q: %s", want, out)
		}
	}
}

// TestServeTTLLongerThanTheBucketKeepsTheRegistration: a provider whose
// TTL is longer than the bucket's own (storage drops what is not written
// again within it) stays registered: it refreshes within the bucket's
// TTL too.
func TestServeTTLLongerThanTheBucketKeepsTheRegistration(t *testing.T) {
	t.Parallel()
	url, bucket, service := freshRegistry(t)
	remote.CreateBucket(t, url, bucket, 3*time.Second)
	pdir := writeFiles(t, map[string]string{"funcs.yml": providerYAML})
	serving(t, pdir, "--service", service, "--registry", url, "--bucket", bucket, "--ttl", "30s")
	time.Sleep(5 * time.Second) // past the bucket's TTL, before a third of the provider's
	dir := watchNATS(t, url, bucket, service, "", "")
	if got := dir.Providers(); len(got) != 1 {
		t.Fatalf("a caller started now lists %d providers, want the running one", len(got))
	}
}

// TestExpiredRegistrationIsNotListed: a caller started after a provider
// died never lists it, even before its first expiry pass.
func TestExpiredRegistrationIsNotListed(t *testing.T) {
	t.Parallel()
	url, bucket, service := freshRegistry(t)
	remote.Register(t, url, bucket, remote.Provider{ID: "dead", Service: service, Addr: "127.0.0.1:1", TTL: 500 * time.Millisecond})
	remote.Register(t, url, bucket, remote.Provider{ID: "live", Service: service, Addr: "127.0.0.1:2", TTL: time.Minute})
	time.Sleep(time.Second)
	dir := watchNATS(t, url, bucket, service, "", "")
	if got := dir.Providers(); len(got) != 1 || got[0].ID != "live" {
		t.Fatalf("a new caller lists %+v, want only the provider whose registration is fresh", got)
	}
}

// TestRestartedProviderIsListedOnce: a provider killed and restarted on
// the same address registers under a new id while its old registration
// is still within its TTL: the directory lists the address once, as the
// newest registration, so broadcast calls it once.
func TestRestartedProviderIsListedOnce(t *testing.T) {
	t.Parallel()
	url, bucket, service := freshRegistry(t)
	remote.Register(t, url, bucket, remote.Provider{ID: "old", Service: service, Addr: "127.0.0.1:1", Version: "1", TTL: time.Minute})
	remote.Register(t, url, bucket, remote.Provider{ID: "other", Service: service, Addr: "127.0.0.1:2", TTL: time.Minute})
	time.Sleep(50 * time.Millisecond)
	remote.Register(t, url, bucket, remote.Provider{ID: "a_new", Service: service, Addr: "127.0.0.1:1", Version: "2", TTL: time.Minute})
	dir := watchNATS(t, url, bucket, service, "", "")
	got := dir.Providers()
	if len(got) != 2 || got[0].ID != "a_new" || got[1].ID != "other" {
		t.Fatalf("the directory lists %+v, want the restarted provider once (its newest registration) and the other", got)
	}
	if v := watchNATS(t, url, bucket, service, "1", "").Providers(); len(v) != 0 {
		t.Fatalf("version 1 lists %+v, want none: the address now serves version 2", v)
	}
}

// TestNoProviderOfTheVersionSaysWhichExist: when no provider has the
// version or group asked for, the call's error names the filter and the
// versions and groups registered, and marks an outage.
func TestNoProviderOfTheVersionSaysWhichExist(t *testing.T) {
	t.Parallel()
	url, bucket, service := freshRegistry(t)
	for i, v := range []string{"1.0", "1.0", "2.0"} {
		remote.Register(t, url, bucket, remote.Provider{ID: fmt.Sprint(i), Service: service, Addr: fmt.Sprintf("127.0.0.1:%d", i+1), Version: v, Group: "blue", Funcs: []string{"Price"}, TTL: time.Minute})
	}
	dir, err := remote.WatchNATS(context.Background(), url, bucket, service, "9", "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := remote.NewClient(dir, remote.Options{Service: service})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Invoke(context.Background(), &driver.Invocation{Func: "Price", Rows: []any{map[string]any{"amount": 1}}})
	if err == nil || !stream.IsUnavailable(err) {
		t.Fatalf("got %v, want an outage", err)
	}
	for _, want := range []string{`version "9"`, `version "1.0" group "blue" (2)`, `version "2.0" group "blue" (1)`} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not say %s", err, want)
		}
	}
}

// TestServeRefusesBadSettings: settings serve cannot use are bad usage
// (exit 2) with a message naming the flag.
func TestServeRefusesBadSettings(t *testing.T) {
	t.Parallel()
	pdir := writeFiles(t, map[string]string{"funcs.yml": providerYAML})
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--service", "s", "--registry", "http://127.0.0.1:4222"}, "--registry"},
		{[]string{"--service", "s", "--registry", "redis://127.0.0.1:6379"}, "--registry"},
		{[]string{"--service", "s", "--registry", "nats://127.0.0.1:99999"}, "--registry"},
		{[]string{"--service", "s", "--registry", "nats://127.0.0.1:0"}, "--registry"},
		{[]string{"--service", "s", "--registry", "nats://:4222"}, "--registry"},
		{[]string{"--service", "bad name.with.dots"}, "--service"},
		{[]string{"--service", "s", "--weight", "0"}, "--weight"},
		{[]string{"--service", "s", "--weight", "-5"}, "--weight"},
		{[]string{"--service", "s", "--ttl", "0s"}, "--ttl"},
		{[]string{"--service", "s", "--ttl", "-3s"}, "--ttl"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		cmd := exec.CommandContext(ctx, kisflowBin(t), append([]string{"serve", pdir, "--listen", "127.0.0.1:0"}, tc.args...)...)
		out, _ := cmd.CombinedOutput()
		cancel()
		if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), tc.want) {
			t.Errorf("serve %v: exit %d, %s; want exit 2 naming %s", tc.args, code, out, tc.want)
		}
	}
}

// TestServeNamesTheServiceAfterTheFolder: without --service (nor a serve
// block), the service is DIR's folder name, as --help says.
func TestServeNamesTheServiceAfterTheFolder(t *testing.T) {
	t.Parallel()
	pdir := filepath.Join(t.TempDir(), "prov_1")
	if err := os.Mkdir(pdir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pdir, "funcs.yml"), []byte(providerYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	p := start(t, "serve", pdir, "--registry", "none", "--listen", "127.0.0.1:0")
	select {
	case l := <-p.line:
		if !strings.HasPrefix(l, "serving prov_1 on ") {
			t.Fatalf("serve printed %q, want the service named prov_1", l)
		}
	case <-p.done:
		t.Fatalf("serve exited: %s", p.output())
	case <-time.After(20 * time.Second):
		t.Fatalf("serve did not start: %s", p.output())
	}
}

// TestDryRunReportsAServiceWithoutProvider: kisflow dry-run fails a remote
// connector that no provider serves, or none of its version, naming what
// is registered.
func TestDryRunReportsAServiceWithoutProvider(t *testing.T) {
	t.Parallel()
	url, bucket, service := freshRegistry(t)
	remote.Register(t, url, bucket, remote.Provider{ID: "a", Service: service, Addr: "127.0.0.1:1", Version: "1.0", Funcs: []string{"Price"}, TTL: time.Minute})
	for _, tc := range []struct{ service, version, want string }{
		{service, "", ": ok"},
		{service, "9", `none of the 1 providers of service "` + service + `" has version "9" (they have version "1.0" group "" (1))`},
		{service + "_none", "", `no provider of service "` + service + `_none" is registered now`},
	} {
		dir := callerDir(t, url, bucket, tc.service, fileSink, "at-least-once")
		if tc.version != "" {
			f := filepath.Join(dir, "conns.yml")
			data, _ := os.ReadFile(f)
			if err := os.WriteFile(f, bytes.Replace(data, []byte("  retries: 2\n"), []byte("  retries: 2\n  version: \""+tc.version+"\"\n"), 1), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		code, out, line := dryRunPricing(t, dir)
		wantCode := 1
		if tc.want == ": ok" {
			wantCode = 0
		}
		if code != wantCode || !strings.Contains(line, tc.want) {
			t.Errorf("dry-run of service %s version %q: exit %d, %s; want exit %d with %q", tc.service, tc.version, code, out, wantCode, tc.want)
		}
	}
}

// TestServeRegistersWhenTheRegistryComesUp: `kisflow serve` started while
// its NATS registry is down serves anyway (it logs that it is
// unregistered), registers once the registry is up, logs it, and a flow
// then finds and calls it.
func TestServeRegistersWhenTheRegistryComesUp(t *testing.T) {
	t.Parallel()
	nats, url, bucket, service := privateRegistry(t)
	nats.Stop()
	pdir := writeFiles(t, map[string]string{"funcs.yml": providerYAML})
	p, _ := serving(t, pdir, "--service", service, "--registry", url, "--bucket", bucket, "--ttl", "2s")
	waitFor(t, p, "registry unreachable; serving unregistered", 5*time.Second)
	time.Sleep(time.Second) // attempts again, with backoff
	nats.Start(t)
	waitFor(t, p, "remote: registered after", 10*time.Second)
	cdir := callerDir(t, url, bucket, service, fileSink, "at-least-once")
	run := start(t, "run", cdir, "--progress", "never")
	feed(t, cdir, 0, 200, 10*time.Millisecond, nil)
	allOut(t, cdir, run, 200, 30*time.Second)
	select {
	case <-p.done:
		t.Fatalf("serve exited: %s", p.output())
	default:
	}
}

// waitFor waits until p's output holds want.
func waitFor(t *testing.T, p *proc, want string, within time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(within); !strings.Contains(p.output(), want); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q within %s: %s", want, within, p.output())
		}
	}
}

// TestRemoteLogsInTheRunsFormat: what a remote connector logs while a flow
// runs (here its registry's outage) comes out through the run's logger, in
// the format of the run's other lines, not through slog.Default's.
func TestRemoteLogsInTheRunsFormat(t *testing.T) {
	t.Parallel()
	nats, url, bucket, service := privateRegistry(t)
	pdir := writeFiles(t, map[string]string{"funcs.yml": providerYAML})
	serving(t, pdir, "--service", service, "--registry", url, "--bucket", bucket, "--ttl", "2s")
	cdir := callerDir(t, url, bucket, service, fileSink, "at-least-once")
	run := start(t, "run", cdir, "--progress", "never")
	feed(t, cdir, 0, 100, 10*time.Millisecond, nil)
	for deadline := time.Now().Add(30 * time.Second); len(readFileRows(t, cdir)) < 100; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the first rows did not come out: %s", run.output())
		}
	}
	nats.Stop() // the connector follows the registry now
	waitFor(t, run, "remote: registry unreachable", 10*time.Second)
	nats.Start(t)
	feed(t, cdir, 100, 200, 10*time.Millisecond, nil)
	out := allOut(t, cdir, run, 200, 30*time.Second)
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "remote: registry unreachable") &&
			(!strings.HasPrefix(l, "time=") || !strings.Contains(l, " level=WARN ") || !strings.Contains(l, " connector=pricing")) {
			t.Fatalf("the registry outage was logged as %q, not in the run's format (time=... level=WARN msg=... connector=pricing):\n%s", l, out)
		}
	}
}

// TestNATSURLWithoutAPortIsPort4222: a registry URL without a port, in
// serve's --registry and in a caller's addrs, is port 4222 as nats.go
// reads it: the provider registers in the machine's NATS and the flow
// finds and calls it.
func TestNATSURLWithoutAPortIsPort4222(t *testing.T) {
	t.Parallel()
	url, bucket, service := freshRegistry(t)
	if !strings.HasSuffix(url, ":4222") {
		t.Skipf("the test NATS server is %s, not on port 4222", url)
	}
	pdir := writeFiles(t, map[string]string{"funcs.yml": providerYAML})
	p, _ := serving(t, pdir, "--service", service, "--registry", "nats://127.0.0.1", "--bucket", bucket)
	cdir := callerDir(t, "nats://127.0.0.1", bucket, service, fileSink, "at-least-once")
	run := start(t, "run", cdir, "--progress", "never")
	feed(t, cdir, 0, 100, 10*time.Millisecond, nil)
	allOut(t, cdir, run, 100, 30*time.Second)
	if out := p.output(); strings.Contains(out, "unreachable") {
		t.Fatalf("serve did not reach nats://127.0.0.1 as port 4222: %s", out)
	}
}

// TestRegistryLosingItsStoreResumes: the NATS registry is SIGKILLed and
// comes back without its JetStream store (a pod without a persistent
// volume) while a flow calls two providers: the providers create the
// registry bucket again and register in it, the caller follows the new
// bucket, and the flow resumes within seconds without any provider
// restarted and without a row lost.
func TestRegistryLosingItsStoreResumes(t *testing.T) {
	t.Parallel()
	nats, url, bucket, service := privateRegistry(t)
	args := []string{"--service", service, "--registry", url, "--bucket", bucket, "--ttl", "2s"}
	pdir := writeFiles(t, map[string]string{"funcs.yml": providerYAML})
	var provs []*proc
	for range 2 {
		p, _ := serving(t, pdir, args...)
		provs = append(provs, p)
	}
	cdir := callerDir(t, url, bucket, service, fileSink, "at-least-once")
	run := start(t, "run", cdir, "--log-level", "info", "--progress", "never")
	const total = 3000
	var back time.Time
	feed(t, cdir, 0, total/2, 50*time.Millisecond, nil)
	for deadline := time.Now().Add(30 * time.Second); len(readFileRows(t, cdir)) < total/2; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the first rows did not come out: %s", run.output())
		}
	}
	nats.CrashLosingData(t, 3*time.Second) // past the providers' TTL
	back = time.Now()
	// For 7.5s: the caller drops the providers it knew 2s after the
	// registry's return unless they register again.
	feed(t, cdir, total/2, total, 250*time.Millisecond, nil)
	fed := time.Now()
	for len(readFileRows(t, cdir)) < total && time.Since(fed) < 20*time.Second {
		time.Sleep(50 * time.Millisecond)
	}
	if took := time.Since(fed); took > 5*time.Second {
		t.Fatalf("the flow took %s after the last row (%s after the registry came back without its store) to write every row, want a few seconds: %s",
			took.Round(time.Millisecond), time.Since(back).Round(time.Millisecond), run.output())
	}
	allOut(t, cdir, run, total, 5*time.Second)
	recreated := false
	for i, p := range provs {
		recreated = recreated || strings.Contains(p.output(), "registry bucket was gone")
		select {
		case <-p.done:
			t.Fatalf("provider %d exited: %s", i, p.output())
		default:
		}
	}
	if !recreated {
		t.Fatalf("no provider logged that it created the bucket again: %s\n%s", provs[0].output(), provs[1].output())
	}
}

// TestRegistryReturnReconcilesTheProviders: after the NATS registry
// restarts (on its store, down longer than the TTL), a caller does not
// give a provider that died before the outage its TTL again: it is dropped
// when the rest of its TTL (the outage not counted) has run out, while the
// live provider is listed throughout.
func TestRegistryReturnReconcilesTheProviders(t *testing.T) {
	t.Parallel()
	nats, url, bucket, service := privateRegistry(t)
	pdir := writeFiles(t, map[string]string{"funcs.yml": providerYAML})
	args := []string{"--service", service, "--registry", url, "--bucket", bucket, "--ttl", "10s"}
	serving(t, pdir, args...)
	dead, deadAddr := serving(t, pdir, args...)
	dir := watchNATS(t, url, bucket, service, "", "")
	waitProviders(t, dir, 2, 5*time.Second)
	_ = dead.cmd.Process.Kill()
	time.Sleep(5 * time.Second)
	nats.Crash(t, 11*time.Second)
	back := time.Now()
	deadAt := listedWhile(t, dir, back, 9*time.Second, func(p remote.Provider) bool { return p.Addr != deadAddr },
		func(p remote.Provider) bool { return p.Addr == deadAddr })
	// Killed 5s before the outage (its last refresh up to 3.3s earlier):
	// at most 5s of its TTL are left, counted from the reconnection,
	// which comes within 2s of the return.
	if deadAt > 7500*time.Millisecond {
		t.Errorf("the provider killed before the outage was still listed %s after the registry came back, want dropped when the rest of its TTL ran out", deadAt)
	}
}

// TestRegistryReturnDropsWhatStorageRemoved: the registry is down longer
// than its bucket's storage TTL, so that storage removes every
// registration when it restarts, the live provider's too: a caller keeps
// the live provider (it registers again on reconnecting) and drops a
// provider that never refreshes within seconds of the return, not after
// the minute of its own TTL.
func TestRegistryReturnDropsWhatStorageRemoved(t *testing.T) {
	t.Parallel()
	nats, url, bucket, service := privateRegistry(t)
	remote.CreateBucket(t, url, bucket, 4*time.Second) // storage keeps 4s
	pdir := writeFiles(t, map[string]string{"funcs.yml": providerYAML})
	serving(t, pdir, "--service", service, "--registry", url, "--bucket", bucket, "--ttl", "10s")
	dir := watchNATS(t, url, bucket, service, "", "")
	// Never refreshed, but of a TTL of a minute.
	remote.Register(t, url, bucket, remote.Provider{ID: "gone", Service: service, Addr: "127.0.0.1:1", TTL: time.Minute})
	waitProviders(t, dir, 2, 5*time.Second)
	nats.Crash(t, 6*time.Second)
	back := time.Now()
	goneAt := listedWhile(t, dir, back, 8*time.Second, func(p remote.Provider) bool { return p.ID != "gone" },
		func(p remote.Provider) bool { return p.ID == "gone" })
	// The caller reconnects within 2s of the return, and keeps a missing
	// registration 3s more at most.
	if goneAt > 6*time.Second {
		t.Errorf("the provider whose registration storage removed was still listed %s after the registry came back, want dropped within seconds", goneAt)
	}
}

// listedWhile watches dir for the time given from back, failing the test
// whenever no provider is live, and returns how long after back a provider
// that is dropped stopped being listed (the time watched if it was not).
func listedWhile(t *testing.T, dir remote.Directory, back time.Time, watched time.Duration, live, dropped func(remote.Provider) bool) time.Duration {
	t.Helper()
	var at time.Duration
	for time.Since(back) < watched {
		ps := dir.Providers()
		if !slices.ContainsFunc(ps, live) {
			t.Fatalf("%s after the registry came back, the live provider is not listed: %+v", time.Since(back).Round(time.Millisecond), ps)
		}
		if at == 0 && !slices.ContainsFunc(ps, dropped) {
			at = time.Since(back).Round(time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if at == 0 {
		at = time.Since(back).Round(time.Millisecond)
	}
	return at
}

// dryRunPricing runs `kisflow dry-run DIR` and returns its exit code, its
// output and the line it gives the connector pricing.
func dryRunPricing(t *testing.T, dir string) (code int, out []byte, line string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kisflowBin(t), "dry-run", dir)
	out, _ = cmd.CombinedOutput()
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "connector pricing ") {
			line = l
		}
	}
	return cmd.ProcessState.ExitCode(), out, line
}

// privateRegistry starts a NATS server of the test's own, for a test that
// stops or crashes it, and names a bucket and a service for the test.
func privateRegistry(t *testing.T) (nats *testenv.Server, url, bucket, service string) {
	t.Helper()
	nats = testenv.PrivateNATS(t)
	url = fmt.Sprintf("nats://127.0.0.1:%d", nats.Port())
	return nats, url, testenv.Name("kfrp_"), testenv.Name("svc_")
}
