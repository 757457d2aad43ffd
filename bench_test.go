package kisflow_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	gojson "github.com/goccy/go-json"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/internal/testenv"
)

const benchBatch = 1000

type benchRow struct {
	ID    int
	Name  string
	Value float64
}

// reportRows reports rows/s for b.N batches of rows rows each.
func reportRows(b *testing.B, rows int) {
	b.ReportMetric(float64(b.N)*float64(rows)/b.Elapsed().Seconds(), "rows/s")
}

func fiveLayers(tb testing.TB, fn any) kisflow.Flow {
	reg := kisflow.NewRegistry()
	names := []string{"L1", "L2", "L3", "L4", "L5"}
	for _, n := range names {
		reg.MustRegister(n, fn)
	}
	return mustFlow(tb, testenv.Engine(tb, reg, chain("Pass", names...)), "Pass")
}

func passThroughRows(ctx context.Context, f kisflow.Flow, rows []*benchRow) error {
	for _, r := range rows {
		_ = f.CommitRow(r)
	}
	return nil
}

func benchInput(n int) []any {
	rows := make([]any, n)
	for i := range rows {
		rows[i] = &benchRow{ID: i, Name: "row", Value: float64(i)}
	}
	return rows
}

// BenchmarkPassThrough5 is issue 2's figure (a): five layers passing *struct
// rows to []*T parameters, batches of 1000 rows.
func BenchmarkPassThrough5(b *testing.B) {
	for _, tc := range []struct {
		name string
		fn   any
	}{
		{"generic", kisflow.Func(passThroughRows)},
		{"reflect", passThroughRows},
	} {
		b.Run(tc.name, func(b *testing.B) { benchFiveLayers(b, tc.fn) })
	}
}

// benchFiveLayers runs batches of benchBatch rows through five layers of fn
// and reports rows/s.
func benchFiveLayers(b *testing.B, fn any) {
	fl := fiveLayers(b, fn)
	in := benchInput(benchBatch)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		_ = fl.CommitRowBatch(in)
		res, err := fl.Run(ctx)
		if err != nil || len(res.Rows) != benchBatch {
			b.Fatal(err, len(res.Rows))
		}
	}
	reportRows(b, benchBatch)
}

// BenchmarkHandLoop5 is the same work written by hand: five loops, each
// type-asserting its input and appending to a reused output slice.
func BenchmarkHandLoop5(b *testing.B) {
	in := benchInput(benchBatch)
	bufs := [5][]any{}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		cur := in
		for l := range bufs {
			out := bufs[l][:0]
			for _, r := range cur {
				out = append(out, r.(*benchRow))
			}
			bufs[l], cur = out, out
		}
		if len(cur) != benchBatch {
			b.Fatal(len(cur))
		}
	}
	reportRows(b, benchBatch)
}

// The quick-start flow's types and functions.
type stuScores struct {
	StuID  int `json:"stu_id"`
	Score1 int `json:"score_1"`
	Score2 int `json:"score_2"`
	Score3 int `json:"score_3"`
}

type stuAvg struct {
	StuID    int
	AvgScore float64
}

func avgStuScore(ctx context.Context, f kisflow.Flow, rows []*stuScores) error {
	for _, r := range rows {
		_ = f.CommitRow(&stuAvg{StuID: r.StuID, AvgScore: float64(r.Score1+r.Score2+r.Score3) / 3})
	}
	return nil
}

func scoreJSON(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf(`{"stu_id":%d, "score_1":%d, "score_2":%d, "score_3":%d}`, 100+i, 60+i%40, 70+i%30, 80+i%20)
	}
	return out
}

func quickstartFlow(tb testing.TB, codec kisflow.Codec, sink *float64) kisflow.Flow {
	reg := kisflow.NewRegistry()
	reg.MustRegister("AvgStuScore", kisflow.Func(avgStuScore))
	reg.MustRegister("PrintStuAvgScore", kisflow.Func(func(ctx context.Context, f kisflow.Flow, rows []*stuAvg) error {
		for _, r := range rows {
			*sink += r.AvgScore
		}
		return nil
	}))
	docs := chain("CalStuAvgScore", "AvgStuScore", "PrintStuAvgScore")
	return mustFlow(tb, testenv.Engine(tb, reg, docs, kisflow.WithCodec(codec)), "CalStuAvgScore")
}

// BenchmarkQuickstartJSON is issue 2's figure (b): the quick-start flow fed
// JSON strings (decode, average, sum instead of print), against
// BenchmarkQuickstartHandLoop.
func BenchmarkQuickstartJSON(b *testing.B) {
	for _, c := range []struct {
		name  string
		codec kisflow.Codec
	}{{"gojson", kisflow.GoJSON{}}, {"stdjson", kisflow.StdJSON{}}} {
		b.Run(c.name, func(b *testing.B) {
			var sum float64
			fl := quickstartFlow(b, c.codec, &sum)
			in := scoreJSON(benchBatch)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				for _, s := range in {
					_ = fl.CommitRow(s)
				}
				res, err := fl.Run(ctx)
				if err != nil || len(res.Rejected) != 0 {
					b.Fatal(err, res.Rejected)
				}
			}
			reportRows(b, benchBatch)
			if sum == 0 {
				b.Fatal("nothing computed")
			}
		})
	}
}

// BenchmarkQuickstartHandLoop decodes the same strings with the same decoder
// in a plain loop, computes the averages into a slice and sums them.
func BenchmarkQuickstartHandLoop(b *testing.B) {
	for _, c := range []struct {
		name      string
		unmarshal func([]byte, any) error
	}{{"gojson", gojson.Unmarshal}, {"stdjson", json.Unmarshal}} {
		b.Run(c.name, func(b *testing.B) {
			in := scoreJSON(benchBatch)
			var sum float64
			avgs := make([]*stuAvg, 0, benchBatch)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				avgs = avgs[:0]
				for _, s := range in {
					r := new(stuScores)
					if err := c.unmarshal([]byte(s), r); err != nil {
						b.Fatal(err)
					}
					avgs = append(avgs, &stuAvg{StuID: r.StuID, AvgScore: float64(r.Score1+r.Score2+r.Score3) / 3})
				}
				for _, a := range avgs {
					sum += a.AvgScore
				}
			}
			reportRows(b, benchBatch)
			if sum == 0 {
				b.Fatal("nothing computed")
			}
		})
	}
}

// TestAllocsPerBatchDoNotGrowWithRows checks the pass-through path: a batch
// of 10,000 rows allocates no more than a batch of 100 once buffers are warm.
func TestAllocsPerBatchDoNotGrowWithRows(t *testing.T) {
	for _, tc := range []struct {
		name string
		fn   any
	}{
		{"generic", kisflow.Func(passThroughRows)},
		{"reflect", passThroughRows},
	} {
		t.Run(tc.name, func(t *testing.T) {
			allocs := func(n int) float64 {
				fl := fiveLayers(t, tc.fn)
				in := benchInput(n)
				ctx := context.Background()
				return testing.AllocsPerRun(20, func() {
					_ = fl.CommitRowBatch(in)
					if _, err := fl.Run(ctx); err != nil {
						t.Fatal(err)
					}
				})
			}
			small, large := allocs(100), allocs(10000)
			if large > small {
				t.Fatalf("allocations per batch grow with rows: %v for 100 rows, %v for 10000", small, large)
			}
			t.Logf("allocations per batch: %v (100 rows), %v (10000 rows)", small, large)
		})
	}
}

// BenchmarkExprStep is the expression step alone: JSON text rows -> a calc
// with keep (the quick-start average written in YAML).
func BenchmarkExprStep(b *testing.B) {
	reg := kisflow.NewRegistry()
	fl := mustFlow(b, testenv.Engine(b, reg, map[string]string{
		"flow.yml": "kistype: flow\nstatus: 1\nflow_name: Avg\nflows:\n  - fname: AvgScore\n",
		"func.yml": "kistype: func\nfname: AvgScore\nfmode: Calculate\ncalc:\n  avg_score: (score_1 + score_2 + score_3) / 3\nkeep: [stu_id, avg_score]\n",
	}), "Avg")
	in := scoreJSON(benchBatch)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for _, s := range in {
			_ = fl.CommitRow(s)
		}
		if res, err := fl.Run(ctx); err != nil || len(res.Rows) != benchBatch {
			b.Fatal(err)
		}
	}
	reportRows(b, benchBatch)
}

// otherRow has benchRow's JSON shape under another type, as KisFlow's
// per-function In and Out types do.
type otherRow struct {
	ID    int
	Name  string
	Value float64
}

// BenchmarkConvertBetweenTypes: five layers, each taking []*benchRow and
// committing an *otherRow, so that every layer after the first converts
// rows of another struct type through the codec (KisFlow's In/Out style).
// Compare with BenchmarkPassThrough5/generic, the typed fast path.
func BenchmarkConvertBetweenTypes(b *testing.B) {
	benchFiveLayers(b, kisflow.Func(func(ctx context.Context, f kisflow.Flow, rows []*benchRow) error {
		for _, r := range rows {
			_ = f.CommitRow(&otherRow{ID: r.ID, Name: r.Name, Value: r.Value})
		}
		return nil
	}))
}
