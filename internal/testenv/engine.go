package testenv

import (
	"context"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
)

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
	set, err := config.ImportFS(fstest.MapFS{
		"global.yml": {Data: []byte(global)},
		"conns.yml":  {Data: []byte(conns)},
	}, ".")
	if err != nil {
		t.Fatal(err)
	}
	eng, err := kisflow.NewEngine(reg, set)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close(context.Background()) })
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
