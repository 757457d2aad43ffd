package bench

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/window"
)

// BenchmarkWindowGroupMemory reports the heap an open window-group takes
// (B/group): a tumbling 1m window grouped by user_id is given rows of N
// users (100k, 1M) inside one minute, so that every group stays open, and
// the live heap after a collection is compared with the one before. The
// rows are maps as the window function gets them from flat JSON (int64
// for integers, float64 for the amount). Aggregates:
//
//   - count+sum: count() and sum(amount), one row per group;
//   - count_distinct/values=V: count_distinct(item), V rows per group with
//     V different items (int64).
//
// It needs no input file and runs without KISFLOW_BENCH_10M:
//
//	go test ./test/bench -run '^$' -bench WindowGroupMemory -benchtime 1x
func BenchmarkWindowGroupMemory(b *testing.B) {
	for _, groups := range []int{100_000, 1_000_000} {
		for _, c := range []struct {
			name   string
			aggs   []window.Aggregate
			values int
		}{
			{"count+sum", []window.Aggregate{{Name: "orders", Func: window.Count}, {Name: "revenue", Func: window.Sum, Field: "amount"}}, 1},
			{"count_distinct/values=1", []window.Aggregate{{Name: "items", Func: window.CountDistinct, Field: "item"}}, 1},
			{"count_distinct/values=10", []window.Aggregate{{Name: "items", Func: window.CountDistinct, Field: "item"}}, 10},
		} {
			b.Run(fmt.Sprintf("groups=%d/%s", groups, c.name), func(b *testing.B) {
				for range b.N {
					b.ReportMetric(groupBytes(b, groups, c.aggs, c.values), "B/group")
				}
			})
		}
	}
}

// groupBytes opens groups window-groups, each given values rows, and
// returns the heap they take per group.
func groupBytes(b *testing.B, groups int, aggs []window.Aggregate, values int) float64 {
	const batch = 4096
	rows := make([]map[string]any, batch)
	for i := range rows {
		rows[i] = make(map[string]any, 4)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	op, err := window.New(window.Spec{Type: window.Tumbling, Size: time.Minute, TimeField: "ts", Lateness: 30 * time.Second,
		MaxAhead: -1, GroupBy: []string{"user_id"}, Aggregates: aggs})
	if err != nil {
		b.Fatal(err)
	}
	total, n := groups*values, 0
	for done := 0; done < total; done += n {
		n = min(batch, total-done)
		for i, r := range rows[:n] {
			k := done + i
			r["ts"] = base + int64(k)*50_000/int64(total) // all in the first minute
			r["user_id"] = int64(k % groups)
			r["amount"] = float64(k%1000) / 4
			r["item"] = int64(k / groups)
		}
		out, rej := op.Process(rows[:n])
		if len(rej) > 0 {
			b.Fatal(rej[0].Err)
		}
		if len(out) > 0 {
			b.Fatalf("%d rows emitted from a window that should still be open", len(out))
		}
	}
	if op.Len() != groups {
		b.Fatalf("%d open window-groups, want %d", op.Len(), groups)
	}
	for _, r := range rows {
		clear(r)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(op)
	return float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(groups)
}
