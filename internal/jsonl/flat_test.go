package jsonl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// Rows written through the flat fast path are byte for byte what
// encoding/json writes, and the rows it does not take (escapes, non-ASCII,
// nested values, other types) are still encoded by encoding/json.
func TestFlatRowsAreEncodedAsEncodingJSONDoes(t *testing.T) {
	strs := []string{"", "bob", "2026-05-01T12:00:00Z", "a b", "quote\"d", `back\slash`, "<b>", "a&b", "tab\t", "\x01",
		"é", "日本", "\u2028", "\xff", "~}{|", "x>y"}
	floats := []float64{0, math.Copysign(0, -1), 1, -1, 0.1, 10.1, 123.456, 1e-6, 9.99e-7, 1e-7, 1.5e-300, 1e20, 1e21,
		-1e21, 123456789012345678, math.MaxFloat64, math.SmallestNonzeroFloat64, 1.0 / 3, 5e-324}
	rng := rand.New(rand.NewPCG(1, 2))
	value := func() any {
		switch rng.IntN(9) {
		case 0:
			return strs[rng.IntN(len(strs))]
		case 1:
			return int64(rng.Uint64())
		case 2:
			return rng.IntN(1000) - 500
		case 3:
			return floats[rng.IntN(len(floats))]
		case 4:
			return math.Float64frombits(rng.Uint64())
		case 5:
			return rng.IntN(2) == 0
		case 6:
			return nil
		case 7:
			return []any{1, "x"}
		default:
			return float32(0.1)
		}
	}
	var rows []any
	for range 5000 {
		m := map[string]any{}
		for range rng.IntN(7) {
			m[strs[rng.IntN(len(strs))]] = value()
		}
		if _, err := json.Marshal(m); err != nil {
			continue // NaN or an infinity: refused by both, see below
		}
		rows = append(rows, m)
	}
	path := filepath.Join(t.TempDir(), "out.jsonl")
	w, err := Open(path, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(context.Background(), rows); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(context.Background(), []any{map[string]any{"x": math.NaN()}}); err == nil {
		t.Error("a NaN was written; encoding/json refuses it")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	fast := 0
	for i := 0; sc.Scan(); i++ {
		want, _ := json.Marshal(rows[i])
		if !bytes.Equal(sc.Bytes(), want) {
			t.Fatalf("row %d: wrote %s, encoding/json writes %s", i, sc.Bytes(), want)
		}
		if _, ok := AppendFlat(nil, rows[i].(map[string]any), new([]string)); ok {
			fast++
		}
	}
	if fast < len(rows)/10 {
		t.Errorf("only %d of %d rows took the fast path", fast, len(rows))
	}
	t.Logf("%d rows, %d through the fast path", len(rows), fast)
}
