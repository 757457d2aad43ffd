package redis

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/internal/testenv"
)

// TestLoadLookupOnCluster reads the records of keys spread over every
// slot range of a cluster in one Fetch, in string and hash mode: string
// mode cannot MGET keys of several slots, so it pipelines GETs there.
func TestLoadLookupOnCluster(t *testing.T) {
	t.Parallel()
	addrs := privateCluster(t)
	ctx := context.Background()
	prefix := testenv.Name("kisflow-test-")
	for _, mode := range []string{"string", "hash"} {
		d, err := New(&config.Conn{CName: "c", Type: Type, Addrs: strings.Join(addrs, ","), Key: prefix + mode + ":{id}", Params: map[string]string{"mode": mode}})
		if err != nil {
			t.Fatal(err)
		}
		r := d.(*Redis)
		if err := r.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Close(ctx) })
		const n = 50
		rows := make([]any, n)
		for i := range rows {
			rows[i] = map[string]any{"id": i, "name": fmt.Sprint("u", i)}
		}
		if err := r.Write(ctx, rows); err != nil {
			t.Fatal(err)
		}
		lk, err := r.LoadLookup(nil)
		if err != nil {
			t.Fatal(err)
		}
		var keys []any
		for i := range n + 1 { // id n has no record
			k, err := lk.Key(map[string]any{"id": i})
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, k)
		}
		recs, err := lk.Fetch(ctx, keys)
		if err != nil {
			t.Fatalf("%s mode: %v", mode, err)
		}
		for i, rec := range recs {
			if i == n {
				if rec != nil {
					t.Fatalf("%s mode: a missing key has the record %v", mode, rec)
				}
				continue
			}
			if rec == nil || rec["name"] != fmt.Sprint("u", i) {
				t.Fatalf("%s mode: key %v: %v", mode, keys[i], rec)
			}
		}
	}
}
