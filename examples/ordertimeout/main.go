// Command ordertimeout cancels the orders that are not paid within 15
// minutes of event time, with keyed state and an event-time timer.
//
// Orders and payments arrive as JSON lines with an event time (ts):
//
//	{"type":"order","order_id":"o1","ts":"2026-03-01T10:00:00Z","amount":42.5}
//	{"type":"payment","order_id":"o1","ts":"2026-03-01T10:07:12Z"}
//
// TrackOrders keeps each order in a ValueState and sets a timer for 15
// minutes after it was placed; a payment in time deletes both. When the
// flow's watermark (the largest event time read, less a minute of
// lateness) passes the deadline, the timer's callback writes a
// "cancelled" row to SQLite. Rows, state, timers and the file position
// commit in one transaction: a killed run resumes and cancels each order
// exactly once. At the end of the file every timer still set fires.
//
//	go run ./examples/ordertimeout -in examples/ordertimeout/events.jsonl -db /tmp/orders.db
package main

import (
	"context"
	"embed"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/connector/file"
	kissql "github.com/kisflow-go/kisflow/connector/sql"
)

//go:embed conf
var conf embed.FS

// PayWithin is how long after it was placed an order may be paid.
const PayWithin = 15 * time.Minute

// Event is an order or a payment.
type Event struct {
	Type    string    `json:"type"` // order | payment
	OrderID string    `json:"order_id"`
	TS      time.Time `json:"ts"`
	Amount  float64   `json:"amount,omitempty"`
}

// Order is what TrackOrders keeps per order: when it was placed, or when
// it was paid when the payment came first.
type Order struct {
	Placed time.Time `json:"placed,omitzero"`
	Amount float64   `json:"amount,omitempty"`
	PaidAt time.Time `json:"paid_at,omitzero"`
}

var (
	// orders expire a day after their last change: a payment that comes
	// after its order was cancelled leaves nothing behind for good.
	orders   = kisflow.NewValueState[Order]("orders", kisflow.StateTTL(24*time.Hour))
	deadline = kisflow.NewTimer("deadline")
)

// TrackOrders keeps each open order and its deadline timer.
func TrackOrders(ctx context.Context, f kisflow.Flow, rows []*Event) error {
	for _, e := range rows {
		o, _, err := orders.Get(f, e.OrderID)
		if err != nil {
			return err
		}
		switch e.Type {
		case "order":
			if !o.PaidAt.IsZero() && !o.PaidAt.After(e.TS.Add(PayWithin)) {
				if err := orders.Delete(f, e.OrderID); err != nil { // paid in time, before the order arrived
					return err
				}
				continue
			}
			o.Placed, o.Amount = e.TS, e.Amount
			if err := orders.Set(f, e.OrderID, o); err != nil {
				return err
			}
			if err := deadline.SetEventTime(f, e.OrderID, e.TS.Add(PayWithin)); err != nil {
				return err
			}
		case "payment":
			switch {
			case o.Placed.IsZero(): // the order comes later (or was cancelled)
				o.PaidAt = e.TS
				if err := orders.Set(f, e.OrderID, o); err != nil {
					return err
				}
			case !e.TS.After(o.Placed.Add(PayWithin)): // in time
				if err := orders.Delete(f, e.OrderID); err != nil {
					return err
				}
				if err := deadline.Delete(f, e.OrderID); err != nil {
					return err
				}
			}
			// A payment after the deadline changes nothing: the timer
			// cancels the order.
		}
	}
	return nil
}

// Cancel is the callback of TrackOrders' timer: the order was not paid in
// time.
func Cancel(ctx context.Context, f kisflow.Flow, t kisflow.FiredTimer) error {
	o, ok, err := orders.Get(f, t.Key)
	if err != nil || !ok || o.Placed.IsZero() {
		return err
	}
	if err := orders.Delete(f, t.Key); err != nil {
		return err
	}
	return f.CommitRow(map[string]any{
		"order_id":  t.Key,
		"status":    "cancelled",
		"placed_at": o.Placed.UTC().Format(time.RFC3339),
		"deadline":  t.Time.Format(time.RFC3339),
		"amount":    o.Amount,
	})
}

// run runs the flow over the events of in into the SQLite database db,
// keeping its position and state in the database (and dead letters in
// stateDir); batch > 0 sets the batch size, workers > 0 the workers (each
// order's events, state and timer go to one of them by order_id).
func run(ctx context.Context, in, db, stateDir string, batch, workers int) (kisflow.JobStats, error) {
	reg := kisflow.NewRegistry()
	if err := file.Install(reg); err != nil {
		return kisflow.JobStats{}, err
	}
	if err := kissql.Install(reg); err != nil {
		return kisflow.JobStats{}, err
	}
	reg.MustRegister("TrackOrders", kisflow.Func(TrackOrders))
	if err := reg.OnTimer("TrackOrders", Cancel); err != nil {
		return kisflow.JobStats{}, err
	}
	set, err := config.ImportFS(conf, "conf")
	if err != nil {
		return kisflow.JobStats{}, err
	}
	set.Conns["events"].Params["path"] = in
	set.Conns["cancelled"].Params["path"] = db
	if batch > 0 {
		set.Flows["OrderTimeout"].Stream.BatchSize = batch
	}
	if workers > 0 {
		set.Flows["OrderTimeout"].Stream.Workers = workers
	}
	eng, err := kisflow.NewEngine(reg, set)
	if err != nil {
		return kisflow.JobStats{}, err
	}
	defer eng.Close(context.WithoutCancel(ctx))
	job, err := eng.Job(ctx, "OrderTimeout", kisflow.WithStateDir(stateDir))
	if err != nil {
		return kisflow.JobStats{}, err
	}
	err = job.Run(ctx)
	return job.Stats(), err
}

func main() {
	in := flag.String("in", "events.jsonl", "the events, one JSON object a line")
	db := flag.String("db", "ordertimeout.db", "the SQLite database the cancelled orders go to (table cancelled)")
	stateDir := flag.String("state", "", "the state folder (default: next to the database)")
	batch := flag.Int("batch", 0, "the batch size (default 1000)")
	workers := flag.Int("workers", 0, "the workers (default 1)")
	flag.Parse()
	if *stateDir == "" {
		*stateDir = filepath.Join(filepath.Dir(*db), ".kisflow")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := run(ctx, *in, *db, *stateDir, *batch, *workers)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ordertimeout:", err)
		os.Exit(1)
	}
	fmt.Printf("read %d events, cancelled %d orders\n", s.Committed, s.Out)
}
