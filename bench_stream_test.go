package kisflow_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/connector/file"
	"github.com/kisflow-go/kisflow/connector/generator"
	kissql "github.com/kisflow-go/kisflow/connector/sql"
)

// runJobOnce runs flow of the config in dir to the end and returns its stats.
func runJobOnce(b *testing.B, reg *kisflow.Registry, dir, flow string) kisflow.JobStats {
	b.Helper()
	return runJobOnceWith(b, reg, dir, flow)
}

// runJobOnceWith is runJobOnce with job options (after the state dir).
func runJobOnceWith(b *testing.B, reg *kisflow.Registry, dir, flow string, opts ...kisflow.JobOption) kisflow.JobStats {
	b.Helper()
	set, err := config.Import(dir)
	if err != nil {
		b.Fatal(err)
	}
	eng, err := kisflow.NewEngine(reg, set, kisflow.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	defer eng.Close(context.Background())
	job, err := eng.Job(context.Background(), flow, append([]kisflow.JobOption{kisflow.WithStateDir(filepath.Join(dir, "state"))}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	if err := job.Run(context.Background()); err != nil {
		b.Fatal(err)
	}
	return job.Stats()
}

func benchRegistry(b *testing.B) *kisflow.Registry {
	reg := kisflow.NewRegistry()
	for _, err := range []error{file.Install(reg), generator.Install(reg), kissql.Install(reg)} {
		if err != nil {
			b.Fatal(err)
		}
	}
	return reg
}

func scoresFile(b *testing.B, dir string, n int) {
	b.Helper()
	var sb strings.Builder
	for i := range n {
		fmt.Fprintf(&sb, "{\"stu_id\":%d,\"score_1\":%d,\"score_2\":%d,\"score_3\":%d}\n", i, 60+i%40, 70+i%30, 80+i%20)
	}
	if err := os.WriteFile(filepath.Join(dir, "scores.jsonl"), []byte(sb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
}

// benchJob runs the flow "flow" of the config docs makes, b.N times, each
// in a fresh folder (fresh positions and databases), expecting rows rows
// out of each run, and reports rows/s.
func benchJob(b *testing.B, reg *kisflow.Registry, flow string, rows int64, docs func() map[string]string) {
	for i := range b.N {
		b.StopTimer()
		dir := b.TempDir()
		writeFiles(b, dir, docs())
		b.StartTimer()
		if s := runJobOnce(b, reg, dir, flow); s.Out != rows {
			b.Fatalf("iteration %d: %d rows out, want %d", i, s.Out, rows)
		}
	}
	reportRows(b, int(rows))
}

// BenchmarkStreamGeneratorPassThrough5 is issue 3's first figure:
// generator -> five-layer pass-through -> discard.
func BenchmarkStreamGeneratorPassThrough5(b *testing.B) {
	const rows = 2_000_000
	reg := benchRegistry(b)
	names := []string{"P1", "P2", "P3", "P4", "P5"}
	for _, n := range names {
		reg.MustRegister(n, kisflow.Func(func(ctx context.Context, f kisflow.Flow, rs []*generator.Row) error {
			for _, r := range rs {
				_ = f.CommitRow(r)
			}
			return nil
		}))
	}
	benchJob(b, reg, "Gen", rows, func() map[string]string {
		docs := chain("Gen", names...)
		docs["flow.yml"] += "stream:\n  source: gen\n  sink: out\n  workers: 2\n  batch_size: 4096\n"
		docs["conns.yml"] = fmt.Sprintf("kistype: conn\ncname: gen\ntype: generator\nparams:\n  count: \"%d\"\n  format: struct\n---\nkistype: conn\ncname: out\ntype: discard\n", rows)
		return docs
	})
}

// BenchmarkStreamJSONLinesExprAvg is issue 3's second figure: a JSON lines
// file of student scores -> the quick-start average as an expression step
// -> discard.
func BenchmarkStreamJSONLinesExprAvg(b *testing.B) {
	const rows = 1_000_000
	reg := benchRegistry(b)
	data := b.TempDir()
	scoresFile(b, data, rows)
	benchJob(b, reg, "Avg", rows, func() map[string]string {
		return map[string]string{
			"flow.yml": "kistype: flow\nstatus: 1\nflow_name: Avg\nflows:\n  - fname: AvgScore\nstream:\n  source: in\n  sink: out\n  workers: 2\n  batch_size: 2000\n",
			"func.yml": "kistype: func\nfname: AvgScore\nfmode: Calculate\ncalc:\n  avg_score: (score_1 + score_2 + score_3) / 3\nkeep: [stu_id, avg_score]\n",
			"conns.yml": "kistype: conn\ncname: in\ntype: file\nparams:\n  path: " + filepath.Join(data, "scores.jsonl") + "\n---\n" +
				"kistype: conn\ncname: out\ntype: discard\n",
		}
	})
}

// BenchmarkStreamJSONLinesToSQLiteExactlyOnce is issue 3's third figure: a
// JSON lines file -> the quick-start flow (typed Go function) -> SQLite,
// exactly-once.
func BenchmarkStreamJSONLinesToSQLiteExactlyOnce(b *testing.B) {
	const rows = 500_000
	reg := benchRegistry(b)
	reg.MustRegister("AvgStuScore", kisflow.Func(avgStuScore))
	data := b.TempDir()
	scoresFile(b, data, rows)
	benchJob(b, reg, "Avg", rows, func() map[string]string {
		return map[string]string{
			"flow.yml": "kistype: flow\nstatus: 1\nflow_name: Avg\nflows:\n  - fname: AvgStuScore\nstream:\n  source: in\n  sink: db\n  delivery: exactly-once\n  workers: 2\n  batch_size: 5000\n",
			"func.yml": "kistype: func\nfname: AvgStuScore\nfmode: Calculate\n",
			"conns.yml": "kistype: conn\ncname: in\ntype: file\nparams:\n  path: " + filepath.Join(data, "scores.jsonl") + "\n---\n" +
				"kistype: conn\ncname: db\ntype: sqlite\nkey: averages\nparams:\n  path: out.db\n  create: \"true\"\n",
		}
	})
}
