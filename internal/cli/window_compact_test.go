package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestWindowsCompactedSurviveSIGKILL is TestWindowsExactlyOnceSurviveSIGKILL
// with windows of an hour and a new user in every batch besides the 17
// regular ones: each delta a batch writes keeps the new user's group until
// its hour closes, so the worker compacts its deltas every few dozen
// batches, and the kills land before, during and after compactions. The
// table must hold exactly the windows of an uninterrupted run, each once.
func TestWindowsCompactedSurviveSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test")
	}
	t.Parallel()
	const n = 3000
	dir, _ := windowCrashDir(t, n, "exactly-once")
	base := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC).UnixMilli()
	type agg struct{ n, sum int64 }
	ref := map[[2]int64]*agg{}
	var b strings.Builder
	for i := 1; i <= n; i++ {
		ts := base + int64(i)*2400 - int64(i%7)*1500 // as windowCrashDir: up to 9 s out of order
		user, amount := int64(i%17), int64(i%13)
		if i%10 == 5 {
			user = int64(100 + i) // one new user per batch of 10
		}
		fmt.Fprintf(&b, "{\"id\":%d,\"ts\":%d,\"user_id\":%d,\"amount\":%d}\n", i, ts, user, amount)
		k := [2]int64{user, ts - ts%3_600_000}
		if ref[k] == nil {
			ref[k] = &agg{}
		}
		ref[k].n++
		ref[k].sum += amount
	}
	want := map[string]string{}
	for k, a := range ref {
		start := time.UnixMilli(k[1]).UTC()
		want[fmt.Sprintf("%d %s %s", k[0], start.Format(time.RFC3339), start.Add(time.Hour).Format(time.RFC3339))] = fmt.Sprintf("%d %d", a.n, a.sum)
	}
	funcs := filepath.Join(dir, "funcs.yml")
	f, err := os.ReadFile(funcs)
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(f), "type: tumbling, size: 1m,", "type: tumbling, size: 1h,", 1)
	if changed == string(f) {
		t.Fatal("the window block of windowCrashDir changed: update this test")
	}
	if err := os.WriteFile(funcs, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "orders.jsonl"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	kills := killUntilDone(t, dir, syscall.SIGKILL, 6)
	if kills < 3 {
		t.Fatalf("only %d kills landed before the job finished; the test needs a longer job", kills)
	}
	checkWindows(t, dir, want, fmt.Sprintf("after %d SIGKILLs", kills), false)
	t.Logf("%d SIGKILLs: all %d windows exactly once", kills, len(want))
}
