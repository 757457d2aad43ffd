// Command gendata writes the windows example's input: N orders as JSON
// lines (ts, user_id, amount), deterministic (a fixed seed), a few
// seconds out of order as events from several servers are, with a few
// late lines that arrive after their minute closed. Run from the
// repository root:
//
//	go run ./examples/windows/gendata -n 2000 -o examples/windows/orders.jsonl
package main

import (
	"bufio"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"time"
)

func main() {
	n := flag.Int("n", 2000, "orders to write")
	out := flag.String("o", "orders.jsonl", "output file")
	late := flag.Int("late", 3, "late orders to mix in (two minutes behind)")
	flag.Parse()
	if err := write(*out, *n, *late); err != nil {
		fmt.Fprintln(os.Stderr, "gendata:", err)
		os.Exit(1)
	}
}

func write(path string, n, late int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	rnd := rand.New(rand.NewPCG(13, 4))
	start := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	every := 10 * time.Minute / time.Duration(n) // ten minutes of orders
	step := n / (late + 1)
	for i := range n {
		t := start.Add(time.Duration(i) * every)
		// Up to 20 s out of order: within the example's 30 s lateness.
		t = t.Add(-time.Duration(rnd.IntN(20_000)) * time.Millisecond)
		if i > 0 && i%step == 0 && i/step <= late {
			t = t.Add(-2 * time.Minute)
		}
		amount := float64(rnd.IntN(10_000)) / 100
		fmt.Fprintf(w, `{"ts":%q,"user_id":%d,"amount":%.2f}`+"\n", t.Format(time.RFC3339Nano), 1+rnd.IntN(20), amount)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
