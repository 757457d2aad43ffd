package cli

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver"
)

// testRemotes returns, for the steps a test runs, the connectors of type
// remote (driver.Spec.Remote) their functions name, each with the first
// function that names it.
func testRemotes(reg *kisflow.Registry, set *config.Set, steps []config.FlowStep) map[string]string {
	out := map[string]string{}
	for _, st := range steps {
		fc := set.Funcs[st.FName]
		if fc == nil || fc.Option.CName == "" || set.Conns[fc.Option.CName] == nil {
			continue
		}
		if spec, ok := reg.ConnectorSpec(set.Conns[fc.Option.CName].Type); ok && spec.Remote {
			if _, seen := out[fc.Option.CName]; !seen {
				out[fc.Option.CName] = st.FName
			}
		}
	}
	return out
}

// provider is the double of remote connector cname: the functions of the
// provider's configuration in dir (relative to the test's file), run in
// this process by an engine of their own, as kisflow serve runs them.
func (r *testRun) provider(cname, dir string) (kisflow.Driver, error) {
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(filepath.Dir(r.tc.pos.File), dir)
	}
	set, err := loadConfig(r.reg, dir, io.Discard)
	if err != nil {
		return nil, fmt.Errorf("mocks.%s.provider %s: %w", cname, dir, err)
	}
	eng, err := kisflow.NewEngine(r.reg, set, kisflow.WithLogger(r.log))
	if err != nil {
		return nil, fmt.Errorf("mocks.%s.provider %s: %w", cname, dir, err)
	}
	return &testProvider{eng: eng}, nil
}

// testProvider runs a remote connector's calls in an engine of the
// provider's configuration (driver.Invoker).
type testProvider struct{ eng *kisflow.Engine }

func (p *testProvider) Start(ctx context.Context) error { return p.eng.Start(ctx) }
func (p *testProvider) Close(ctx context.Context) error { return p.eng.Close(ctx) }

// Invoke runs the call's function over its rows, as a provider does.
func (p *testProvider) Invoke(ctx context.Context, call *driver.Invocation) (*driver.Outcome, error) {
	return p.eng.Invoke(ctx, call.Func, call.Params, call.Rows)
}
