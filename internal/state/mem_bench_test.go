package state

import (
	"encoding/json"
	"runtime"
	"strconv"
	"testing"
)

// BenchmarkMemoryPerEntry reports the heap a committed value-state entry
// takes (a counter: an int value, a key of about 8 bytes).
func BenchmarkMemoryPerEntry(b *testing.B) {
	const n = 200_000
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "user" + strconv.Itoa(i)
	}
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		tb := New(1, json.Marshal)
		x := tb.Begin(0)
		for i, k := range keys {
			_ = x.Put(ID{Name: "visits", Key: k}, i+1000, 0)
		}
		tb.Apply([]*Txn{x})
		tb.Begin(0) // the lane lets the applied part go
		runtime.GC()
		runtime.ReadMemStats(&after)
		if tb.Len() != n {
			b.Fatal(tb.Len())
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/entry")
	}
}
