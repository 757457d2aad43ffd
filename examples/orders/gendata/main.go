// Command gendata writes the orders example's input: N orders as gzipped JSON
// lines, deterministic, with a few malformed lines to show the dead-letter
// path. Run from the repository root:
//
//	go run ./examples/orders/gendata -n 100000 -o examples/orders/orders.jsonl.gz
package main

import (
	"bufio"
	"compress/gzip"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
)

func main() {
	n := flag.Int("n", 100000, "orders to write")
	out := flag.String("o", "orders.jsonl.gz", "output file")
	bad := flag.Int("bad", 3, "malformed lines to mix in")
	flag.Parse()
	if err := write(*out, *n, *bad); err != nil {
		fmt.Fprintln(os.Stderr, "gendata:", err)
		os.Exit(1)
	}
}

func write(path string, n, bad int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	zw, _ := gzip.NewWriterLevel(f, gzip.BestCompression)
	w := bufio.NewWriter(zw)
	r := rand.New(rand.NewPCG(1, 2))
	statuses := []string{"paid", "paid", "paid", "paid", "cancelled", "pending"}
	every := n / (bad + 1)
	for i := 1; i <= n; i++ {
		if bad > 0 && every > 0 && i%every == 0 && i/every <= bad {
			fmt.Fprintf(w, "{\"order_id\": %d, \"user_id\": oops}\n", i)
			continue
		}
		fmt.Fprintf(w, "{\"order_id\":%d,\"user_id\":%d,\"sku\":\"SKU-%03d\",\"qty\":%d,\"price\":%.2f,\"status\":%q}\n",
			i, 1+r.IntN(5000), r.IntN(200), 1+r.IntN(5), 1+float64(r.IntN(20000))/100, statuses[r.IntN(len(statuses))])
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return f.Close()
}
