package kisflow_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/internal/testenv"
)

type mustOrder struct {
	ID       int               `json:"id"`
	Status   *string           `json:"status"`
	Qty      int               `json:"qty,omitempty"`
	Customer map[string]any    `json:"customer"`
	Tags     map[string]string `json:"-"`
}

// A source row lacking a field of the first function's source.must
// (absent, or null) is rejected before that function, with the fields
// named; the other rows reach it as they came. Later functions' must
// lists are not checked at run time. The check is a Job's (its instances
// dead-letter such rows); CheckSourceMust turns it on for Run.
func TestSourceMustRejectsRowsLackingAField(t *testing.T) {
	t.Parallel()
	paid := "paid"
	rows := []any{
		`{"id":1,"status":"paid","qty":2,"customer":{"id":7}}`,                                // 0 ok
		`{"id":2,"qty":2,"customer":{"id":7}}`,                                                // 1 no status
		`{"id":3,"status":null,"qty":0,"customer":{"id":7}}`,                                  // 2 null status
		[]byte(`{"id":4,"status":"x","qty":1,"customer":{"name":"ann"}}`),                     // 3 no customer.id
		map[string]any{"id": 5, "status": "x", "qty": 1, "customer": map[string]any{"id": 1}}, // 4 ok
		map[string]any{"id": 6, "status": "x", "customer": map[string]any{"id": 1}},           // 5 no qty
		&mustOrder{ID: 7, Status: &paid, Qty: 3, Customer: map[string]any{"id": 1}},           // 6 ok
		mustOrder{ID: 8, Qty: 3, Customer: map[string]any{"id": 1}},                           // 7 nil status
		&mustOrder{ID: 9, Status: &paid, Customer: map[string]any{"id": 1}},                   // 8 qty 0, omitempty
		`{"id":10,`,       // 9 not JSON
		42,                // 10 no fields
		(*mustOrder)(nil), // 11 nil
	}
	want := map[int][]string{
		1: {"status"}, 2: {"status"}, 3: {"customer.id"}, 5: {"qty"}, 7: {"status"}, 8: {"qty"},
		9: {"status", "qty", "customer.id"}, 10: {"status", "qty", "customer.id"}, 11: {"status", "qty", "customer.id"},
	}
	var seen []any
	reg := kisflow.NewRegistry()
	reg.MustRegister("Take", kisflow.FuncRows(func(ctx context.Context, f kisflow.Flow, in []any) error {
		seen = append(seen, in...)
		return f.CommitRowBatch(in)
	}))
	reg.MustRegister("Next", kisflow.FuncRows(func(ctx context.Context, f kisflow.Flow, in []any) error {
		return f.CommitRowBatch(in)
	}))
	eng := testenv.Engine(t, reg, map[string]string{
		"flow.yml": "kistype: flow\nstatus: 1\nflow_name: F\nflows:\n  - fname: Take\n  - fname: Next\n",
		"func.yml": "kistype: func\nfname: Take\nfmode: Calculate\nsource:\n  name: orders\n  must: [status, qty, customer.id]\n" +
			"---\nkistype: func\nfname: Next\nfmode: Calculate\nsource:\n  must: [never_there]\n",
	})
	fl := mustFlow(t, eng, "F")
	kisflow.CheckSourceMust(fl)
	if err := fl.CommitRowBatch(rows); err != nil {
		t.Fatal(err)
	}
	res, err := fl.Run(context.Background())
	var rejErr *kisflow.RejectedError
	if !errors.As(err, &rejErr) || len(res.Rejected) != len(want) {
		t.Fatalf("Run: %v, rejected %v; want %d rows rejected", err, res.Rejected, len(want))
	}
	for _, re := range res.Rejected {
		var mf *kisflow.MissingFieldError
		if !errors.As(re, &mf) || !slices.Equal(mf.Fields, want[re.Index]) || re.Func != "Take" || re.Layer != 0 || fmt.Sprint(re.Row) != fmt.Sprint(rows[re.Index]) {
			t.Errorf("row %d: %v (fields %v), want fields %v", re.Index, re, mf, want[re.Index])
		}
	}
	if got := res.Rejected[0].Err.Error(); got != `missing required field "status" (source.must)` {
		t.Errorf("reason %q", got)
	}
	if got := res.Rejected[len(res.Rejected)-3].Err.Error(); got != `missing required fields "status", "qty", "customer.id" (source.must): row is not a JSON object: `+reasonOf(t, `{"id":10,`) {
		t.Errorf("reason %q", got)
	}
	wantSeen := []any{rows[0], rows[4], rows[6]}
	if len(seen) != len(wantSeen) || fmt.Sprint(seen) != fmt.Sprint(wantSeen) {
		t.Errorf("Take got %v, want %v as they came", seen, wantSeen)
	}
	if len(res.Rows) != 3 {
		t.Errorf("out %v: the second function's must is not checked at run time", res.Rows)
	}
}

// reasonOf is the engine codec's error for data, as MissingFieldError
// quotes it.
func reasonOf(t *testing.T, data string) string {
	t.Helper()
	var m map[string]any
	err := kisflow.GoJSON{}.Unmarshal([]byte(data), &m)
	if err == nil {
		t.Fatalf("%q decodes", data)
	}
	return err.Error()
}

// A flow whose first function declares no must takes every row.
func TestNoSourceMustTakesEveryRow(t *testing.T) {
	t.Parallel()
	reg := kisflow.NewRegistry()
	reg.MustRegister("Take", kisflow.FuncRows(func(ctx context.Context, f kisflow.Flow, in []any) error {
		return f.CommitRowBatch(in)
	}))
	fl := mustFlow(t, testenv.Engine(t, reg, chain("F", "Take")), "F")
	_ = fl.CommitRowBatch([]any{`{}`, 42, `not json`})
	res, err := fl.Run(context.Background())
	if err != nil || len(res.Rows) != 3 {
		t.Fatalf("Run: %v, %d rows", err, len(res.Rows))
	}
}

// In front of a function written in YAML: the row lacking the must field
// is rejected, the filter runs on the others, and `$env.coupon` reads a
// field outside must (lint leaves $env alone).
func TestSourceMustWithYAMLFilter(t *testing.T) {
	t.Parallel()
	eng := testenv.Engine(t, kisflow.NewRegistry(), map[string]string{
		"flow.yml": "kistype: flow\nstatus: 1\nflow_name: F\nflows:\n  - fname: Paid\n",
		"func.yml": "kistype: func\nfname: Paid\nfmode: Verify\nsource:\n  must: [status]\nfilter: status == \"paid\" && $env.coupon == nil\n",
	})
	fl := mustFlow(t, eng, "F")
	kisflow.CheckSourceMust(fl)
	_ = fl.CommitRowBatch([]any{`{"status":"paid"}`, `{"stats":"paid"}`, `{"status":"paid","coupon":"x"}`, `{"status":"open"}`})
	res, err := fl.Run(context.Background())
	if len(res.Rejected) != 1 || res.Rejected[0].Index != 1 || len(res.Rows) != 1 {
		t.Fatalf("Run: %v, rows %v, rejected %v", err, res.Rows, res.Rejected)
	}
}
