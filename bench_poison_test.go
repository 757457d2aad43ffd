package kisflow_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// BenchmarkStreamPoisonRows compares a JSON lines file with 1% poison rows
// against the same file clean, through a YAML flow (a filter, then a calc
// expression) into a discard sink, with the default retry policy. Half the
// poison lines are not JSON (rejected by the first function's decoding),
// half carry a text score the calc expression fails on (rejected by the
// second function). Deterministic failures go to the dead-letter file at
// once, so poison should cost about what clean input does (issue 10: at
// most 1.5x).
func BenchmarkStreamPoisonRows(b *testing.B) {
	const rows = 100_000
	reg := benchRegistry(b)
	for _, c := range []struct {
		name  string
		every int // a poison line every so many lines; 0: none
	}{{"clean", 0}, {"poison-1pct", 100}} {
		b.Run(c.name, func(b *testing.B) {
			data := b.TempDir()
			poison := poisonScores(b, filepath.Join(data, "scores.jsonl"), rows, c.every)
			for i := range b.N {
				b.StopTimer()
				dir := b.TempDir()
				writeFiles(b, dir, map[string]string{
					"flow.yml": "kistype: flow\nstatus: 1\nflow_name: Avg\nflows:\n  - fname: Present\n  - fname: AvgScore\nstream:\n  source: in\n  sink: out\n  workers: 2\n  batch_size: 2000\n",
					"func.yml": "kistype: func\nfname: Present\nfmode: Verify\nfilter: stu_id >= 0\n---\n" +
						"kistype: func\nfname: AvgScore\nfmode: Calculate\ncalc:\n  avg_score: (score_1 + score_2 + score_3) / 3\nkeep: [stu_id, avg_score]\n",
					"conns.yml": "kistype: conn\ncname: in\ntype: file\nparams:\n  path: " + filepath.Join(data, "scores.jsonl") + "\n---\n" +
						"kistype: conn\ncname: out\ntype: discard\n",
				})
				b.StartTimer()
				s := runJobOnce(b, reg, dir, "Avg")
				if s.Out != int64(rows-poison) || s.DeadLettered != int64(poison) || s.Committed != rows {
					b.Fatalf("iteration %d: %d out, %d dead letters, %d committed; want %d, %d, %d", i, s.Out, s.DeadLettered, s.Committed, rows-poison, poison, rows)
				}
			}
			reportRows(b, rows)
		})
	}
}

// poisonScores writes n score lines to path, every every-th one poison
// (alternately not JSON, and a text score), and returns how many are.
func poisonScores(b *testing.B, path string, n, every int) int {
	b.Helper()
	var sb strings.Builder
	poison := 0
	for i := range n {
		switch {
		case every > 0 && i%every == every-1 && poison%2 == 0:
			fmt.Fprintf(&sb, "{\"stu_id\":%d,\"score_1\":\n", i)
			poison++
		case every > 0 && i%every == every-1:
			fmt.Fprintf(&sb, "{\"stu_id\":%d,\"score_1\":\"absent\",\"score_2\":%d,\"score_3\":%d}\n", i, 70+i%30, 80+i%20)
			poison++
		default:
			fmt.Fprintf(&sb, "{\"stu_id\":%d,\"score_1\":%d,\"score_2\":%d,\"score_3\":%d}\n", i, 60+i%40, 70+i%30, 80+i%20)
		}
	}
	if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	return poison
}
