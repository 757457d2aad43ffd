package window

import (
	"runtime"
	"testing"
	"time"
)

// BenchmarkTumbling: a 1m tumbling window, 100k users, count and sum, over
// rows as encoding/json decodes them (float64 numbers), 1M rows a minute.
// The cost of emitting each closed window's 100k rows is included.
func BenchmarkTumbling(b *testing.B) {
	const users, batch = 100_000, 4096
	o, err := New(Spec{Type: Tumbling, Size: time.Minute, TimeField: "ts", Lateness: time.Second,
		GroupBy: []string{"user_id"}, Aggregates: []Aggregate{{"orders", Count, ""}, {"revenue", Sum, "amount"}}})
	if err != nil {
		b.Fatal(err)
	}
	rows := make([]map[string]any, batch)
	for i := range rows {
		rows[i] = map[string]any{}
	}
	const base = 1_700_000_000_000
	next := 0
	fill := func() {
		for i, r := range rows {
			n := next + i
			r["user_id"] = float64(n * 7919 % users)
			r["ts"] = float64(base + int64(n)*60/1000) // 1M rows a minute
			r["amount"] = float64(n%1000) / 4
		}
		next += len(rows)
	}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ReportAllocs()
	b.ResetTimer()
	emitted := 0
	for done := 0; done < b.N; done += batch {
		b.StopTimer()
		fill()
		n := min(batch, b.N-done)
		b.StartTimer()
		out, rej := o.Process(rows[:n])
		if len(rej) > 0 {
			b.Fatal(rej[0].Err)
		}
		emitted += len(out)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(float64(emitted), "emitted")
	// The heap per open window-group, with a full window (100k groups).
	if groups := o.Len(); groups >= users/2 {
		var after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(groups), "B/group")
	}
	runtime.KeepAlive(o)
}
