package window_test

import (
	"fmt"
	"time"

	"github.com/kisflow-go/kisflow/window"
)

// Orders per user per minute, in event time, with 30 seconds of lateness.
func ExampleOperator() {
	revenue, _ := window.ParseAggregate("revenue", "sum(amount)")
	orders, _ := window.ParseAggregate("orders", "count()")
	op, err := window.New(window.Spec{
		Type:       window.Tumbling,
		Size:       time.Minute,
		TimeField:  "ts",
		Lateness:   30 * time.Second,
		Late:       window.DeadLetter,
		GroupBy:    []string{"user_id"},
		Aggregates: []window.Aggregate{orders, revenue},
	})
	if err != nil {
		panic(err)
	}
	out, rejected := op.Process([]map[string]any{
		{"user_id": 7, "ts": "2026-05-01T12:00:10Z", "amount": 20.0},
		{"user_id": 7, "ts": "2026-05-01T12:00:50Z", "amount": "5.5"},
		{"user_id": 8, "ts": "2026-05-01T12:00:20Z", "amount": 1},
		{"user_id": 7, "ts": "2026-05-01T12:01:40Z", "amount": 3},   // watermark 12:01:10: [12:00, 12:01) closes
		{"user_id": 8, "ts": "2026-05-01T12:00:59Z", "amount": 2},   // late
		{"user_id": 8, "ts": "2026-05-01T12:01:05Z", "amount": "?"}, // not a number
	})
	for _, r := range out {
		fmt.Println(r)
	}
	for _, r := range rejected {
		fmt.Println("rejected", r.Index, r.Err)
	}
	for _, r := range op.Flush() {
		fmt.Println("flush", r)
	}
	// Output:
	// map[orders:2 revenue:25.5 user_id:7 window_end:2026-05-01T12:01:00Z window_start:2026-05-01T12:00:00Z]
	// map[orders:1 revenue:1 user_id:8 window_end:2026-05-01T12:01:00Z window_start:2026-05-01T12:00:00Z]
	// rejected 4 late row: its window already closed (window ending 2026-05-01T12:01:00Z, watermark 2026-05-01T12:01:10Z)
	// rejected 5 aggregate revenue: field "amount": "?" is not a number
	// flush map[orders:1 revenue:3 user_id:7 window_end:2026-05-01T12:02:00Z window_start:2026-05-01T12:01:00Z]
}
