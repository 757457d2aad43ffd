// Command actions shows what a function can ask of its flow, with params and
// parallel forks:
//
//   - VerifyOrder drops orders with no amount and asks ForceEntryNext, so an
//     empty batch goes on (Discount and Settle pass it on the same way) and
//     Report still runs and reports it.
//   - Discount reads its `rate` param (the flow's value overrides the
//     function's default) and its `currency` default.
//   - Settle saves through the Ledger connector; an order above the limit is
//     flagged and Settle asks JumpFunc("Discount") once to re-price the batch.
//   - Report prints each batch; it asks Abort on an empty batch.
//
// Four forks of the flow run batches in parallel and share the one Ledger.
package main

import (
	"context"
	"embed"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"sync"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/connector/memory"
)

//go:embed conf
var conf embed.FS

// Order is an order as it arrives.
type Order struct {
	ID     int     `json:"id"`
	Amount float64 `json:"amount"`
}

// Priced is an order after Discount.
type Priced struct {
	ID       int
	Total    float64
	Currency string
}

// limit is the largest total Settle accepts without a second discount.
const limit = 1000

// VerifyOrder keeps orders with a positive amount.
func VerifyOrder(ctx context.Context, f kisflow.Flow, rows []*Order) error {
	for _, o := range rows {
		if o.Amount > 0 {
			_ = f.CommitRow(o)
		}
	}
	return f.Next(kisflow.ForceEntryNext)
}

// Discount prices orders at the `rate` param; on a second pass (the flow's
// cache says "repriced") it takes another 10% off.
func Discount(ctx context.Context, f kisflow.Flow, rows []*Order) error {
	if len(rows) == 0 {
		return f.Next(kisflow.ForceEntryNext) // carry the empty batch on to Report
	}
	rate, err := strconv.ParseFloat(f.Param("rate"), 64)
	if err != nil {
		return fmt.Errorf("param rate: %w", err)
	}
	if _, again := f.Cache("repriced"); again {
		rate *= 0.9
	}
	for _, o := range rows {
		_ = f.CommitRow(&Priced{ID: o.ID, Total: o.Amount * rate, Currency: f.Param("currency")})
	}
	return nil
}

// Settle stores priced orders in the ledger, or sends the batch back to
// Discount once when an order is above the limit.
func Settle(ctx context.Context, f kisflow.Flow, rows []*Priced) error {
	if len(rows) == 0 {
		return f.Next(kisflow.ForceEntryNext)
	}
	if _, again := f.Cache("repriced"); !again {
		for _, p := range rows {
			if p.Total > limit {
				f.SetCache("repriced", true, 0)
				return f.Next(kisflow.JumpFunc("Discount"))
			}
		}
	}
	f.SetCache("repriced", nil, 0) // nil deletes it: the next batch on this instance starts afresh
	c, err := f.Connector()
	if err != nil {
		return err
	}
	for _, p := range rows {
		if _, err := c.Call(ctx, f, p); err != nil {
			return err
		}
		_ = f.CommitRow(p)
	}
	return nil
}

func reporter(w io.Writer, mu *sync.Mutex) func(context.Context, kisflow.Flow, []*Priced) error {
	return func(ctx context.Context, f kisflow.Flow, rows []*Priced) error {
		if len(rows) == 0 {
			mu.Lock()
			fmt.Fprintf(w, "batch %v: no valid orders\n", f.Meta("batch"))
			mu.Unlock()
			return f.Next(kisflow.Abort)
		}
		sum := 0.0
		for _, p := range rows {
			sum += p.Total
			_ = f.CommitRow(p)
		}
		mu.Lock()
		fmt.Fprintf(w, "batch %v: %d orders, %.2f %s\n", f.Meta("batch"), len(rows), sum, rows[0].Currency)
		mu.Unlock()
		return nil
	}
}

// newEngine builds the example's engine; Report writes to w.
func newEngine(w io.Writer) (*kisflow.Engine, error) {
	reg := kisflow.NewRegistry()
	if err := memory.Install(reg); err != nil {
		return nil, err
	}
	var mu sync.Mutex
	for name, fn := range map[string]any{
		"VerifyOrder": VerifyOrder,
		"Discount":    Discount,
		"Settle":      Settle,
		"Report":      reporter(w, &mu),
	} {
		if err := reg.Register(name, fn); err != nil {
			return nil, err
		}
	}
	set, err := config.ImportFS(conf, "conf")
	if err != nil {
		return nil, err
	}
	return kisflow.NewEngine(reg, set)
}

func run(ctx context.Context, w io.Writer) error {
	eng, err := newEngine(w)
	if err != nil {
		return err
	}
	defer eng.Close(ctx)
	base, err := eng.Flow(ctx, "OrderPipeline")
	if err != nil {
		return err
	}

	batches := [][]Order{
		{{1, 100}, {2, 250}},
		{{3, 0}, {4, -5}},    // nothing valid: Report still runs
		{{5, 1200}, {6, 50}}, // above the limit: re-priced once
		{{7, 10}},
	}
	var wg sync.WaitGroup
	errs := make([]error, len(batches))
	for i, batch := range batches {
		fl := base.Fork()
		fl.SetMeta("batch", i+1)
		_ = fl.CommitRowBatch(batch)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = fl.Run(ctx)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	ledger, err := eng.Connector(ctx, "Ledger")
	if err != nil {
		return err
	}
	var ids []int
	for _, r := range ledger.Driver().(*memory.Store).Rows("settled") {
		ids = append(ids, r.(*Priced).ID)
	}
	sort.Ints(ids)
	fmt.Fprintf(w, "ledger: %v\n", ids)
	return nil
}

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "actions:", err)
		os.Exit(1)
	}
}
