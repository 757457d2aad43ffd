package remote_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow"
	connremote "github.com/kisflow-go/kisflow/connector/remote"
	"github.com/kisflow-go/kisflow/internal/testenv"
)

// BenchmarkRemoteStep runs a flow of one function over batches of 1000
// JSON rows, locally and as a remote step over loopback gRPC (a provider
// served in-process, a static registry), and reports both rates, their
// ratio and the time the remote call adds per batch. The local and the
// remote flow run in alternation, batch by batch, so that both see the
// same load of the (shared) machine.
//
// The functions: go_pass commits its rows as they came (nothing to do
// locally: the ratio only shows the call's cost); go_typed decodes each
// row into a struct, sets a field and commits it (the smallest Go
// function that reads its rows); yaml_calc is `calc: {price: amount * 2}`.
func BenchmarkRemoteStep(b *testing.B) {
	type order struct {
		ID     int    `json:"id"`
		User   string `json:"user"`
		Amount int    `json:"amount"`
		Price  int    `json:"price"`
	}
	calc := "kistype: func\nfname: F\nfmode: Calculate\ncalc:\n  price: amount * 2\n"
	for _, tc := range []struct {
		name string
		fn   kisflow.Handler // nil: the YAML calc
	}{
		{"go_pass", kisflow.FuncRows(func(_ context.Context, f kisflow.Flow, rs []any) error { return f.CommitRowBatch(rs) })},
		{"go_typed", kisflow.Func(func(_ context.Context, f kisflow.Flow, rs []*order) error {
			for _, o := range rs {
				o.Price = 2 * o.Amount
				if err := f.CommitRow(o); err != nil {
					return err
				}
			}
			return nil
		})},
		{"yaml_calc", nil},
	} {
		b.Run(tc.name, func(b *testing.B) {
			fn := "kistype: func\nfname: F\nfmode: Calculate\n"
			reg := func() *kisflow.Registry {
				r := kisflow.NewRegistry()
				if tc.fn != nil {
					r.MustRegister("F", tc.fn)
				}
				return r
			}
			body := fn
			if tc.fn == nil {
				body = calc
			}
			local := testenv.Engine(b, reg(), map[string]string{"f.yml": body + "---\n" + benchFlow})
			addr := serveEngineB(b, testenv.Engine(b, reg(), map[string]string{"f.yml": body}), "F")
			creg := kisflow.NewRegistry()
			if err := connremote.Install(creg); err != nil {
				b.Fatal(err)
			}
			conn := fmt.Sprintf("kistype: conn\ncname: p\ntype: remote\naddrs: %s\nparams:\n  registry: static\n---\n", addr)
			remote := testenv.Engine(b, creg, map[string]string{"f.yml": conn + fn + "option:\n  cname: p\n---\n" + benchFlow})
			benchPair(b, local, remote)
		})
	}
	// The YAML calc served by a `kisflow serve` process, as it runs in
	// production: the provider has its own heap and scheduler.
	b.Run("yaml_calc_process", func(b *testing.B) {
		local := testenv.Engine(b, kisflow.NewRegistry(), map[string]string{"f.yml": calc + "---\n" + benchFlow})
		_, addr := serving(b, writeFiles(b, map[string]string{"f.yml": calc}), "--service", "bench", "--registry", "none")
		creg := kisflow.NewRegistry()
		if err := connremote.Install(creg); err != nil {
			b.Fatal(err)
		}
		conn := fmt.Sprintf("kistype: conn\ncname: p\ntype: remote\naddrs: %s\nparams:\n  registry: static\n---\n", addr)
		remote := testenv.Engine(b, creg, map[string]string{"f.yml": conn + "kistype: func\nfname: F\nfmode: Calculate\noption:\n  cname: p\n---\n" + benchFlow})
		benchPair(b, local, remote)
	})
}

const benchFlow = "kistype: flow\nstatus: 1\nflow_name: Fl\nflows:\n  - fname: F\n"

func benchPair(b *testing.B, local, remote *kisflow.Engine) {
	const batch = 1000
	rows := make([]any, batch)
	for i := range rows {
		rows[i] = []byte(fmt.Sprintf(`{"id":%d,"user":"u%d","amount":%d}`, i, i%100, i))
	}
	ctx := context.Background()
	lf, err := local.Flow(ctx, "Fl")
	if err != nil {
		b.Fatal(err)
	}
	rf, err := remote.Flow(ctx, "Fl")
	if err != nil {
		b.Fatal(err)
	}
	run := func(fl kisflow.Flow) time.Duration {
		start := time.Now()
		_ = fl.CommitRowBatch(rows)
		res, err := fl.Run(ctx)
		if err != nil || len(res.Rows) != batch {
			b.Fatal(err, len(res.Rows))
		}
		return time.Since(start)
	}
	run(rf) // connect
	var tl, tr time.Duration
	b.ResetTimer()
	for range b.N {
		tl += run(lf)
		tr += run(rf)
	}
	n := float64(b.N * batch)
	b.ReportMetric(n/tl.Seconds(), "local_rows/s")
	b.ReportMetric(n/tr.Seconds(), "remote_rows/s")
	b.ReportMetric(tl.Seconds()/tr.Seconds(), "x_local")
	b.ReportMetric(float64((tr-tl).Microseconds())/float64(b.N), "added_µs/batch")
	b.ReportMetric(0, "ns/op")
}
