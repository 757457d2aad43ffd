package main

import (
	"bytes"
	"context"
	"sort"
	"strings"
	"testing"
)

func TestActionsExample(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	last := lines[len(lines)-1]
	batches := lines[:len(lines)-1]
	sort.Strings(batches) // forks finish in any order
	want := []string{
		"batch 1: 2 orders, 315.00 EUR",  // (100+250) * 0.9
		"batch 2: no valid orders",       // ForceEntryNext, then Abort
		"batch 3: 2 orders, 1012.50 EUR", // (1200+50) * 0.9 * 0.9 after the jump
		"batch 4: 1 orders, 9.00 EUR",
	}
	if strings.Join(batches, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got:\n%s\nwant:\n%s", strings.Join(batches, "\n"), strings.Join(want, "\n"))
	}
	if last != "ledger: [1 2 5 6 7]" {
		t.Fatalf("ledger line: %q", last)
	}
}

// One flow instance reused for two batches: the first is re-priced (the
// jump sets "repriced" in the flow's cache), and Settle clears the flag
// with SetCache(key, nil), so the second is priced once: 1000 * 0.9.
func TestActionsReusedInstance(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var out bytes.Buffer
	eng, err := newEngine(&out)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close(ctx)
	fl, err := eng.Flow(ctx, "OrderPipeline")
	if err != nil {
		t.Fatal(err)
	}
	for i, batch := range [][]Order{{{5, 1200}, {6, 50}}, {{8, 1000}}} {
		fl.SetMeta("batch", i+1)
		_ = fl.CommitRowBatch(batch)
		if _, err := fl.Run(ctx); err != nil {
			t.Fatal(err)
		}
	}
	want := "batch 1: 2 orders, 1012.50 EUR\nbatch 2: 1 orders, 900.00 EUR\n"
	if out.String() != want {
		t.Fatalf("got:\n%swant:\n%s", out.String(), want)
	}
}
