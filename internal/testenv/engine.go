package testenv

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
)

// Engine builds an engine from YAML files given by name and content; it
// closes when the test ends.
func Engine(t testing.TB, reg *kisflow.Registry, files map[string]string, opts ...kisflow.Option) *kisflow.Engine {
	t.Helper()
	fsys := fstest.MapFS{}
	for name, data := range files {
		fsys[name] = &fstest.MapFile{Data: []byte(data)}
	}
	set, err := config.ImportFS(fsys, ".")
	if err != nil {
		t.Fatal(err)
	}
	eng, err := kisflow.NewEngine(reg, set, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close(context.Background()) })
	return eng
}

// RunJob runs flow's stream job on eng until n messages are committed (the
// test fails after wait), stops it and returns its figures.
func RunJob(t testing.TB, eng *kisflow.Engine, flow string, n int64, wait time.Duration) kisflow.JobStats {
	t.Helper()
	job, err := eng.Job(context.Background(), flow, kisflow.WithStateDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	err = RunUntil(t, job.Run, func() bool { return job.Stats().Committed >= n }, wait,
		func() string { return fmt.Sprintf("committed %d of %d", job.Stats().Committed, n) })
	if err != nil {
		t.Fatal(err)
	}
	return job.Stats()
}

// StartJob runs flow's stream job on eng in the background; stop ends it
// and returns what its Run returned.
func StartJob(t testing.TB, eng *kisflow.Engine, flow string) (job *kisflow.Job, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	job, err := eng.Job(ctx, flow, kisflow.WithStateDir(t.TempDir()))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- job.Run(ctx) }()
	var once sync.Once
	var result error
	stop = func() error {
		once.Do(func() {
			cancel()
			result = <-done
		})
		return result
	}
	t.Cleanup(func() { _ = stop() })
	return job, stop
}

// SharedClients builds an engine from a global file configuring the
// plugin typ.main and conns naming it from connectors a and b (and a
// connector "bad" naming plugins.typ.nosuch), checks that "bad" fails
// with an error naming the missing plugin, and returns the engine and the
// drivers of a and b, for tests of shared-client plugins.
func SharedClients(t *testing.T, install func(*kisflow.Registry) error, typ, global, conns string) (*kisflow.Engine, kisflow.Driver, kisflow.Driver) {
	t.Helper()
	reg := kisflow.NewRegistry()
	if err := install(reg); err != nil {
		t.Fatal(err)
	}
	eng := Engine(t, reg, map[string]string{"global.yml": global, "conns.yml": conns})
	ctx := context.Background()
	var drivers [2]kisflow.Driver
	for i, name := range []string{"a", "b"} {
		c, err := eng.Connector(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		drivers[i] = c.Driver()
	}
	if _, err := eng.Connector(ctx, "bad"); err == nil || !strings.Contains(err.Error(), "plugins."+typ+".nosuch") {
		t.Fatalf("a connector naming a missing client: %v", err)
	}
	return eng, drivers[0], drivers[1]
}
