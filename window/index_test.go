package window

import (
	"hash/maphash"
	"math/rand/v2"
	"testing"
	"time"
)

// TestIndex compares the index with a Go map over keys of every length,
// inline and not, through several growths.
func TestIndex(t *testing.T) {
	t.Parallel()
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 3))
	x := newIndex(maphash.MakeSeed(), 0)
	want := map[string]int32{}
	key := func() []byte {
		b := make([]byte, rng.IntN(2*inlineKey+2))
		for i := range b {
			b[i] = byte(rng.IntN(3)) // few letters: many keys share prefixes
		}
		return b
	}
	for i := range 20000 {
		k := key()
		got, ok := x.find(k)
		w, wok := want[string(k)]
		if ok != wok || got != w {
			t.Fatalf("find(%v) = %d %v, want %d %v", k, got, ok, w, wok)
		}
		if ok {
			if got, found := x.findOrAdd(k, -1); !found || got != w {
				t.Fatalf("findOrAdd(%v) of a known key = %d %v, want %d", k, got, found, w)
			}
			continue
		}
		if i%2 == 0 {
			x.add(k, int32(i))
		} else if got, found := x.findOrAdd(k, int32(i)); found || got != int32(i) {
			t.Fatalf("findOrAdd(%v) of a new key = %d %v", k, got, found)
		}
		want[string(k)] = int32(i)
	}
	for k, w := range want {
		if got, ok := x.find([]byte(k)); !ok || got != w {
			t.Fatalf("find(%v) = %d %v, want %d", k, got, ok, w)
		}
	}
	if x.n+len(x.long) != len(want) || len(x.long) == 0 || x.n == 0 {
		t.Errorf("%d inline and %d long keys, want %d in all, of both kinds", x.n, len(x.long), len(want))
	}
}
