package remote_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow"
	connfile "github.com/kisflow-go/kisflow/connector/file"
	connremote "github.com/kisflow-go/kisflow/connector/remote"
	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/internal/testenv"
)

// BenchmarkRemoteStep runs a flow of one function over batches of 1000
// JSON rows, locally and as a remote step over loopback gRPC (a provider
// served in-process, a static registry), and reports both rates, their
// ratio and the time the remote call adds per batch. The local and the
// remote flow run in alternation (see benchBlock), so that both see the
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
			benchPair(b, local, remote, 0)
		})
	}
	// The YAML calc served by a `kisflow serve` process, as it runs in
	// production: the provider has its own heap and scheduler.
	b.Run("yaml_calc_process", func(b *testing.B) {
		local := testenv.Engine(b, kisflow.NewRegistry(), map[string]string{"f.yml": calc + "---\n" + benchFlow})
		prov, addr := serving(b, writeFiles(b, map[string]string{"f.yml": calc}), "--service", "bench", "--registry", "none")
		creg := kisflow.NewRegistry()
		if err := connremote.Install(creg); err != nil {
			b.Fatal(err)
		}
		conn := fmt.Sprintf("kistype: conn\ncname: p\ntype: remote\naddrs: %s\nparams:\n  registry: static\n---\n", addr)
		remote := testenv.Engine(b, creg, map[string]string{"f.yml": conn + "kistype: func\nfname: F\nfmode: Calculate\noption:\n  cname: p\n---\n" + benchFlow})
		benchPair(b, local, remote, prov.cmd.Process.Pid)
	})
}

const benchFlow = "kistype: flow\nstatus: 1\nflow_name: Fl\nflows:\n  - fname: F\n"

// benchBlock is how many batches benchPair runs through one flow before
// it turns to the other. The flows alternate so that both see the same
// load of the (shared) machine, by blocks rather than batch by batch:
// the Go runtime collects garbage in idle time, and a caller is idle while
// its remote call is out, so batch by batch the local flow's garbage (a
// map a row) was collected on the remote flow's clock (a fifth of the
// caller's CPU time per remote batch, and as much wall time). A block
// spans several collections, so each flow pays for its own.
const benchBlock = 100

// benchPair runs batches through the local and the remote engine's flow
// Fl in alternation (benchBlock batches of each in turn) and reports their rates, their ratio, the time the
// remote call adds per batch and the CPU time per batch of each: the
// process's own, measured around each run (both ends of the call when the
// provider runs in this process), plus the provider process's (pid, when
// not 0) for the remote runs. CPU time does not depend on the machine's
// load as wall time does.
func benchPair(b *testing.B, local, remote *kisflow.Engine, pid int) {
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
	var tl, tr, cl, cr time.Duration
	p0 := procCPU(b, pid)
	b.ResetTimer()
	for done := 0; done < b.N; done += benchBlock {
		n := min(benchBlock, b.N-done)
		c0 := selfCPU()
		for range n {
			tl += run(lf)
		}
		c1 := selfCPU()
		for range n {
			tr += run(rf)
		}
		c2 := selfCPU()
		cl += c1 - c0
		cr += c2 - c1
	}
	b.StopTimer()
	cp := procCPU(b, pid) - p0
	cr += cp
	if pid != 0 {
		b.ReportMetric(float64(cp.Microseconds())/float64(b.N), "provider_cpu_µs/batch")
	}
	n := float64(b.N * batch)
	b.ReportMetric(float64(cl.Microseconds())/float64(b.N), "local_cpu_µs/batch")
	b.ReportMetric(float64(cr.Microseconds())/float64(b.N), "remote_cpu_µs/batch")
	b.ReportMetric(n/tl.Seconds(), "local_rows/s")
	b.ReportMetric(n/tr.Seconds(), "remote_rows/s")
	b.ReportMetric(tl.Seconds()/tr.Seconds(), "x_local")
	b.ReportMetric(float64((tr-tl).Microseconds())/float64(b.N), "added_µs/batch")
	b.ReportMetric(0, "ns/op")
}

// selfCPU is the CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is the CPU time process pid has used (0 for pid 0), from
// /proc/PID/stat, in clock ticks of 10ms.
func procCPU(b *testing.B, pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command's name (in parentheses, which may
	// hold spaces): utime and stime are the 12th and 13th.
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	var ticks int64
	for _, s := range f[11:13] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		ticks += v
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// BenchmarkRemoteStream runs a stream job (a file of JSON lines -> the
// YAML calc `price: amount * 2` -> discard, batches of 1000) to its end,
// the calc local and as a remote step served by a `kisflow serve` process,
// with 1 and 2 workers, and reports both rates and their ratio as
// BenchmarkRemoteStep does. With 2 workers two batches are in flight to
// the provider at once: the caller reads and sends one batch while the
// provider computes another. Each iteration runs each job once, local and
// remote in alternation.
func BenchmarkRemoteStream(b *testing.B) {
	const rows = 100_000
	calc := "kistype: func\nfname: F\nfmode: Calculate\ncalc:\n  price: amount * 2\n"
	data := b.TempDir()
	var in strings.Builder
	for i := range rows {
		fmt.Fprintf(&in, `{"id":%d,"user":"u%d","amount":%d}`+"\n", i, i%100, i)
	}
	if err := os.WriteFile(filepath.Join(data, "in.jsonl"), []byte(in.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	prov, addr := serving(b, writeFiles(b, map[string]string{"f.yml": calc}), "--service", "bench", "--registry", "none")
	conns := "kistype: conn\ncname: in\ntype: file\nparams:\n  path: " + filepath.Join(data, "in.jsonl") + "\n---\nkistype: conn\ncname: out\ntype: discard\n---\n"
	remoteConn := fmt.Sprintf("kistype: conn\ncname: p\ntype: remote\naddrs: %s\nparams:\n  registry: static\n---\n", addr)
	for _, workers := range []int{1, 2} {
		b.Run(fmt.Sprintf("yaml_calc_process_workers_%d", workers), func(b *testing.B) {
			flow := fmt.Sprintf("%sstream:\n  source: in\n  sink: out\n  workers: %d\n  batch_size: 1000\n", benchFlow, workers)
			engine := func(remote bool) *kisflow.Engine {
				reg := kisflow.NewRegistry()
				for _, install := range []func(driver.Registrar) error{connremote.Install, connfile.Install} {
					if err := install(reg); err != nil {
						b.Fatal(err)
					}
				}
				fn := calc
				if remote {
					fn = remoteConn + "kistype: func\nfname: F\nfmode: Calculate\noption:\n  cname: p\n"
				}
				return testenv.Engine(b, reg, map[string]string{"f.yml": conns + fn + "---\n" + flow}, kisflow.WithLogger(slog.New(slog.DiscardHandler)))
			}
			local, remote := engine(false), engine(true)
			run := func(eng *kisflow.Engine) time.Duration {
				start := time.Now()
				job, err := eng.Job(context.Background(), "Fl", kisflow.WithStateDir(b.TempDir()))
				if err != nil {
					b.Fatal(err)
				}
				if err := job.Run(context.Background()); err != nil {
					b.Fatal(err)
				}
				if s := job.Stats(); s.Out != rows {
					b.Fatalf("%d rows out, want %d", s.Out, rows)
				}
				return time.Since(start)
			}
			run(remote) // connect
			var tl, tr, cl, cr time.Duration
			p0 := procCPU(b, prov.cmd.Process.Pid)
			b.ResetTimer()
			for range b.N {
				c0 := selfCPU()
				tl += run(local)
				c1 := selfCPU()
				tr += run(remote)
				c2 := selfCPU()
				cl += c1 - c0
				cr += c2 - c1
			}
			b.StopTimer()
			cp := procCPU(b, prov.cmd.Process.Pid) - p0
			cr += cp
			n := float64(b.N * rows)
			batches := float64(b.N * rows / 1000)
			b.ReportMetric(n/tl.Seconds(), "local_rows/s")
			b.ReportMetric(n/tr.Seconds(), "remote_rows/s")
			b.ReportMetric(tl.Seconds()/tr.Seconds(), "x_local")
			b.ReportMetric(float64(cl.Microseconds())/batches, "local_cpu_µs/batch")
			b.ReportMetric(float64(cr.Microseconds())/batches, "remote_cpu_µs/batch")
			b.ReportMetric(float64(cp.Microseconds())/batches, "provider_cpu_µs/batch")
			b.ReportMetric(0, "ns/op")
		})
	}
}
