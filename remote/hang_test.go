package remote_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/remote"
)

// TestSIGTERMCutsCallsThatOutlastTheDrain: a provider whose function
// hangs (an hour's sleep that ignores its context) stops on SIGTERM once
// the 10s drain has passed, exiting 1 and saying the calls in flight were
// cut (it took its registration out and never exited).
func TestSIGTERMCutsCallsThatOutlastTheDrain(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "hangprov")
	if out, err := exec.Command("go", "build", "-o", bin, "./testdata/hangprov").CombinedOutput(); err != nil {
		t.Fatalf("building the provider: %v\n%s", err, out)
	}
	pdir := writeFiles(t, map[string]string{"f.yml": "kistype: func\nfname: Hang\nfmode: Calculate\n"})
	p := startBin(t, bin, "serve", pdir, "--registry", "none")
	addr := servingAddr(t, p)
	dir, err := remote.Static([]string{addr})
	if err != nil {
		t.Fatal(err)
	}
	c, err := remote.NewClient(dir, remote.Options{Service: "hang", Timeout: time.Hour, Cluster: "failfast"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	called := make(chan error, 1)
	go func() {
		_, err := c.Invoke(context.Background(), &driver.Invocation{Func: "Hang", Rows: []any{[]byte(`{"id":1}`)}})
		called <- err
	}()
	for !strings.Contains(p.output(), "Hang called") {
		select {
		case err := <-called:
			t.Fatalf("the call returned %v: %s", err, p.output())
		case <-time.After(10 * time.Millisecond):
		}
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	sent := time.Now()
	code := p.wait(t, 20*time.Second)
	took := time.Since(sent)
	if code != 1 || !strings.Contains(p.output(), "calls in flight cut") || took < 9*time.Second {
		t.Fatalf("serve exited %d %s after SIGTERM, want 1 after the 10s drain, saying calls were cut: %s", code, took, p.output())
	}
	select {
	case err := <-called:
		if err == nil {
			t.Fatal("the cut call succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the cut call did not fail in its caller")
	}
}

// TestSIGTERMMidStreamOpensNoBreaker: a provider drained by SIGTERM while a
// `kisflow run` flow with four workers calls it and another: every row
// comes out, none is dead-lettered, the provider exits 0 (it keeps
// answering, refusing new calls, until its calls in flight are done), and
// the caller never opens its breaker. (The breaker that opened with
// failures=3 after such a drain is shown by TestADrainingProviderIsNotAFailure,
// whose static list keeps calls racing the drain; here the registry drops
// the provider at once and the race is rarely hit.)
func TestSIGTERMMidStreamOpensNoBreaker(t *testing.T) {
	t.Parallel()
	url, bucket, service := freshRegistry(t)
	pdir := writeFiles(t, map[string]string{"funcs.yml": providerYAML})
	args := []string{"--service", service, "--registry", url, "--bucket", bucket, "--ttl", "3s"}
	a, _ := serving(t, pdir, args...)
	serving(t, pdir, args...)
	cdir := callerDir(t, url, bucket, service, fileSink, "at-least-once")
	flow := filepath.Join(cdir, "flow.yml")
	data, err := os.ReadFile(flow)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(flow, append(data, "  workers: 4\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	run := start(t, "run", cdir, "--log-level", "info", "--progress", "never")
	const total = 3000
	feed(t, cdir, 0, total, 10*time.Millisecond, func(i int) {
		if i == 1000 {
			_ = a.cmd.Process.Signal(syscall.SIGTERM)
		}
	})
	if code := a.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("the drained provider exited %d: %s", code, a.output())
	}
	out := allOut(t, cdir, run, total, 30*time.Second)
	if strings.Contains(out, "breaker opens") {
		t.Fatalf("a drained provider's breaker opened: %s", out)
	}
}
