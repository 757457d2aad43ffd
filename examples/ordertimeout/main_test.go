package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"
)

// writeEvents writes n orders and their payments to path, in an order that
// is event time with up to 50s of disorder (less than the flow's minute of
// lateness), and returns the ids of the orders that must be cancelled: the
// unpaid ones and those paid after 15 minutes. Some payments are read
// before their order.
func writeEvents(t testing.TB, path string, n int, seed uint64) map[string]bool {
	t.Helper()
	rnd := rand.New(rand.NewPCG(seed, 7))
	base := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	type line struct {
		at  time.Time // read order
		row Event
	}
	var lines []line
	want := map[string]bool{}
	for i := range n {
		id := fmt.Sprintf("o%05d", i)
		placed := base.Add(time.Duration(i) * 20 * time.Second)
		lines = append(lines, line{placed.Add(time.Duration(rnd.IntN(50)) * time.Second), Event{Type: "order", OrderID: id, TS: placed, Amount: float64(1 + rnd.IntN(500))}})
		switch r := rnd.IntN(10); {
		case r < 4: // never paid
			want[id] = true
		case r < 5: // paid too late
			paid := placed.Add(PayWithin + time.Duration(1+rnd.IntN(600))*time.Second)
			lines = append(lines, line{paid.Add(time.Duration(rnd.IntN(50)) * time.Second), Event{Type: "payment", OrderID: id, TS: paid}})
			want[id] = true
		default: // paid in time, sometimes within seconds (read before the order)
			paid := placed.Add(time.Duration(rnd.IntN(int(PayWithin/time.Second))) * time.Second)
			lines = append(lines, line{paid.Add(time.Duration(rnd.IntN(50)) * time.Second), Event{Type: "payment", OrderID: id, TS: paid}})
		}
	}
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].at.Before(lines[j].at) })
	var b strings.Builder
	for i, l := range lines {
		data, err := json.Marshal(l.row)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			// Every other line as Python's json.dumps writes it: a space
			// after each colon and comma, which is no part of a key.
			data = []byte(strings.NewReplacer(`":`, `": `, `,"`, `, "`).Replace(string(data)))
		}
		b.Write(data)
		b.WriteByte('\n')
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return want
}

// cancelledIn returns how many times each order is in the cancelled table
// (an empty map while the table does not exist yet).
func cancelledIn(t testing.TB, db string) map[string]int {
	t.Helper()
	h, err := sql.Open("sqlite", db+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	rows, err := h.Query(`SELECT order_id, status FROM cancelled`)
	if err != nil {
		if strings.Contains(err.Error(), "no such table") {
			return map[string]int{}
		}
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[string]int{}
	for rows.Next() {
		var id, status string
		if err := rows.Scan(&id, &status); err != nil {
			t.Fatal(err)
		}
		if status != "cancelled" {
			t.Fatalf("order %s: status %q", id, status)
		}
		got[id]++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}

// checkOnce fails unless got holds each order of want exactly once, and no
// other.
func checkOnce(t *testing.T, got map[string]int, want map[string]bool) {
	t.Helper()
	var bad []string
	for id := range want {
		if got[id] != 1 {
			bad = append(bad, fmt.Sprintf("%s cancelled %d times, want once", id, got[id]))
		}
	}
	for id, n := range got {
		if !want[id] {
			bad = append(bad, fmt.Sprintf("%s (paid in time) cancelled %d times", id, n))
		}
	}
	sort.Strings(bad)
	if len(bad) > 0 {
		if len(bad) > 20 {
			bad = append(bad[:20], fmt.Sprintf("... and %d more", len(bad)-20))
		}
		t.Fatalf("%d of %d orders wrong:\n%s", len(bad), len(want), strings.Join(bad, "\n"))
	}
}

func TestOrderTimeoutExample(t *testing.T) {
	t.Parallel()
	for _, workers := range []int{1, 3} {
		t.Run(fmt.Sprintf("workers=%d", workers), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			in, db := filepath.Join(dir, "events.jsonl"), filepath.Join(dir, "out.db")
			want := writeEvents(t, in, 600, 1)
			s, err := run(context.Background(), in, db, filepath.Join(dir, "state"), 25, workers)
			if err != nil {
				t.Fatal(err)
			}
			if s.Out != int64(len(want)) {
				t.Errorf("job wrote %d rows, want %d", s.Out, len(want))
			}
			checkOnce(t, cancelledIn(t, db), want)
			// A second run over the same file reads nothing new and
			// cancels nothing again.
			if _, err := run(context.Background(), in, db, filepath.Join(dir, "state"), 25, workers); err != nil {
				t.Fatal(err)
			}
			checkOnce(t, cancelledIn(t, db), want)
		})
	}
}

// TestOrderTimeoutSIGKILL runs the example's binary and kills it with
// SIGKILL at random points of the stream, three times, then lets a last
// run finish: timers set before a kill fire after the restart, and each
// order is cancelled exactly once.
func TestOrderTimeoutSIGKILL(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bin := filepath.Join(dir, "ordertimeout")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	in, db := filepath.Join(dir, "events.jsonl"), filepath.Join(dir, "out.db")
	const n = 3000
	want := writeEvents(t, in, n, 2)
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	args := []string{"-in", in, "-db", db, "-state", filepath.Join(dir, "state"), "-batch", "8", "-workers", "2"}
	killed := 0
	for kill := range 3 {
		cmd := exec.Command(bin, args...)
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		// Kill once the sink holds more than before, at a random point.
		before := len(cancelledIn(t, db))
		target := before + 1 + rnd.IntN(len(want)/5)
		deadline := time.Now().Add(time.Minute)
		done := false
		for !done {
			select {
			case err := <-exited:
				t.Logf("run %d ended before its kill (%v): %s", kill+1, err, out.String())
				done = true
				continue
			case <-time.After(time.Duration(1+rnd.IntN(10)) * time.Millisecond):
			}
			if len(cancelledIn(t, db)) >= target || time.Now().After(deadline) {
				_ = cmd.Process.Kill()
				<-exited
				killed++
				done = true
			}
		}
		got := cancelledIn(t, db)
		for id, c := range got {
			if c > 1 {
				t.Fatalf("after kill %d: order %s cancelled %d times", kill+1, id, c)
			}
		}
		t.Logf("kill %d: %d of %d orders cancelled so far", kill+1, len(got), len(want))
	}
	if killed == 0 {
		t.Fatal("no run was killed mid-stream: the test proved nothing")
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("last run: %v\n%s", err, out)
	}
	checkOnce(t, cancelledIn(t, db), want)
}

// TestShippedEvents runs the README's command on the events shipped
// beside the example: o2, o3 (paid too late) and o5 (unpaid at the end of
// the file) are cancelled, o1 and o4 (paid in time) are not.
func TestShippedEvents(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db := filepath.Join(dir, "orders.db")
	if _, err := run(context.Background(), "events.jsonl", db, filepath.Join(dir, "state"), 0, 0); err != nil {
		t.Fatal(err)
	}
	checkOnce(t, cancelledIn(t, db), map[string]bool{"o2": true, "o3": true, "o5": true})
}
