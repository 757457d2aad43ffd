package remote_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/kisflow-go/kisflow"
	connremote "github.com/kisflow-go/kisflow/connector/remote"
	"github.com/kisflow-go/kisflow/internal/testenv"
)

// BenchmarkRemoteStep runs a flow of one trivial function (it commits its
// rows) over batches of 1000 JSON rows, locally and as a remote step over
// loopback gRPC, and reports rows/s.
func BenchmarkRemoteStep(b *testing.B) {
	const batch = 1000
	rows := make([]any, batch)
	for i := range rows {
		rows[i] = []byte(fmt.Sprintf(`{"id":%d,"user":"u%d","amount":%d}`, i, i%100, i))
	}
	pass := kisflow.FuncRows(func(_ context.Context, f kisflow.Flow, rs []any) error { return f.CommitRowBatch(rs) })
	fn := "kistype: func\nfname: Pass\nfmode: Calculate\n"
	flow := "kistype: flow\nstatus: 1\nflow_name: F\nflows:\n  - fname: Pass\n"
	runFlow := func(b *testing.B, eng *kisflow.Engine) {
		fl, err := eng.Flow(context.Background(), "F")
		if err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for range b.N {
			_ = fl.CommitRowBatch(rows)
			res, err := fl.Run(context.Background())
			if err != nil || len(res.Rows) != batch {
				b.Fatal(err, len(res.Rows))
			}
		}
		b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "rows/s")
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/batch")
	}
	b.Run("local", func(b *testing.B) {
		reg := kisflow.NewRegistry()
		reg.MustRegister("Pass", pass)
		runFlow(b, testenv.Engine(b, reg, map[string]string{"f.yml": fn + "---\n" + flow}))
	})
	b.Run("remote", func(b *testing.B) {
		preg := kisflow.NewRegistry()
		preg.MustRegister("Pass", pass)
		addr := serveEngineB(b, testenv.Engine(b, preg, map[string]string{"f.yml": fn}), "Pass")
		creg := kisflow.NewRegistry()
		if err := connremote.Install(creg); err != nil {
			b.Fatal(err)
		}
		conn := fmt.Sprintf("kistype: conn\ncname: p\ntype: remote\naddrs: %s\nparams:\n  registry: static\n---\n", addr)
		runFlow(b, testenv.Engine(b, creg, map[string]string{"f.yml": conn + fn + "option:\n  cname: p\n---\n" + flow}))
	})
	// The same with a YAML calc (price: amount * 2), which decodes and
	// encodes each row: the smallest step a flow really has.
	calc := "kistype: func\nfname: Pass\nfmode: Calculate\ncalc:\n  price: amount * 2\n"
	b.Run("local_calc", func(b *testing.B) {
		runFlow(b, testenv.Engine(b, kisflow.NewRegistry(), map[string]string{"f.yml": calc + "---\n" + flow}))
	})
	b.Run("remote_calc", func(b *testing.B) {
		addr := serveEngineB(b, testenv.Engine(b, kisflow.NewRegistry(), map[string]string{"f.yml": calc}), "Pass")
		creg := kisflow.NewRegistry()
		if err := connremote.Install(creg); err != nil {
			b.Fatal(err)
		}
		conn := fmt.Sprintf("kistype: conn\ncname: p\ntype: remote\naddrs: %s\nparams:\n  registry: static\n---\n", addr)
		runFlow(b, testenv.Engine(b, creg, map[string]string{"f.yml": conn + fn + "option:\n  cname: p\n---\n" + flow}))
	})
}
