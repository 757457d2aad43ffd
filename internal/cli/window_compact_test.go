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
	orders, want := windowOrders(n, time.Hour, func(i int) int64 {
		if i%10 == 5 {
			return int64(100 + i) // one new user per batch of 10
		}
		return int64(i % 17)
	})
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
	if err := os.WriteFile(filepath.Join(dir, "orders.jsonl"), []byte(orders), 0o644); err != nil {
		t.Fatal(err)
	}
	kills := killUntilDone(t, dir, syscall.SIGKILL, 6)
	if kills < 3 {
		t.Fatalf("only %d kills landed before the job finished; the test needs a longer job", kills)
	}
	checkWindows(t, dir, want, fmt.Sprintf("after %d SIGKILLs", kills), false)
	t.Logf("%d SIGKILLs: all %d windows exactly once", kills, len(want))
}
