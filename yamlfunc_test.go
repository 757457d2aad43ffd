package kisflow_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/internal/testenv"
)

// fakeStore is a driver with the Loader capability over records by key,
// for the engine's side of YAML loads. It counts fetches and the keys
// fetched.
type fakeStore struct {
	mu      sync.Mutex
	recs    map[string]map[string]any
	fetches [][]any
	fail    error
}

func (s *fakeStore) Start(context.Context) error { return nil }
func (s *fakeStore) Close(context.Context) error { return nil }

func (s *fakeStore) LoadLookup(map[string]string) (kisflow.Lookup, error) { return s, nil }

func (s *fakeStore) Key(row map[string]any) (any, error) {
	k, ok := row["k"]
	if !ok {
		return nil, errors.New("row lacks field k")
	}
	return k, nil
}

func (s *fakeStore) Fetch(_ context.Context, keys []any) ([]map[string]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return nil, s.fail
	}
	s.fetches = append(s.fetches, slices.Clone(keys))
	out := make([]map[string]any, len(keys))
	for i, k := range keys {
		out[i] = s.recs[fmt.Sprint(k)]
	}
	return out, nil
}

func (s *fakeStore) fetched() [][]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.fetches)
}

// yamlLoadEngine is an engine running the flow F: one Load function with no
// Go body, with params, through a connector of the fake store with
// connParams.
func yamlLoadEngine(t *testing.T, params, connParams string) (*kisflow.Engine, *fakeStore) {
	t.Helper()
	store := &fakeStore{recs: map[string]map[string]any{
		"1": {"name": "one", "tier": "gold"},
		"2": {"name": "two", "tier": "silver"},
	}}
	reg := kisflow.NewRegistry()
	if err := reg.RegisterDriver("fake", func(*config.Conn) (kisflow.Driver, error) { return store, nil }); err != nil {
		t.Fatal(err)
	}
	eng := testenv.Engine(t, reg, map[string]string{
		"flow.yml":  "kistype: flow\nstatus: 1\nflow_name: F\nflows:\n  - fname: L\n",
		"func.yml":  "kistype: func\nfname: L\nfmode: Load\noption:\n  cname: c\n  default_params:\n    x: y\n" + params,
		"conns.yml": "kistype: conn\ncname: c\ntype: fake\nparams:\n  x: y\n" + connParams,
	})
	return eng, store
}

func runRows(t *testing.T, fl kisflow.Flow, rows ...any) (kisflow.Result, error) {
	t.Helper()
	for _, r := range rows {
		if err := fl.CommitRow(r); err != nil {
			t.Fatal(err)
		}
	}
	return fl.Run(context.Background())
}

func TestYAMLLoadMergesOneFetchPerRun(t *testing.T) {
	t.Parallel()
	eng, store := yamlLoadEngine(t, "", "")
	fl := mustFlow(t, eng, "F")
	res, err := runRows(t, fl,
		`{"k":1,"tier":"none","n":1}`,
		map[string]any{"k": 2, "n": 2},
		`{"k":1,"n":3}`,
		`{"k":3,"n":4}`,
		`{"n":5}`,
	)
	var rej *kisflow.RejectedError
	if !errors.As(err, &rej) || len(rej.Rows) != 1 || rej.Rows[0].Index != 4 || !strings.Contains(rej.Rows[0].Error(), "row lacks field k") {
		t.Fatalf("the row without a key: %v", err)
	}
	got := fmt.Sprint(res.Rows)
	// The record's fields replace the row's; no record: the row passes.
	want := "[map[k:1 n:1 name:one tier:gold] map[k:2 n:2 name:two tier:silver] map[k:1 n:3 name:one tier:gold] map[k:3 n:4]]"
	if got != want {
		t.Fatalf("rows %s, want %s", got, want)
	}
	if f := store.fetched(); len(f) != 1 || len(f[0]) != 3 {
		t.Fatalf("fetches %v, want one of the 3 distinct keys", f)
	}
}

func TestYAMLLoadOnMissing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		param, want string
		rejected    int
	}{
		{"", "[map[k:1 name:one tier:gold] map[k:3]]", 0},
		{"    on_missing: pass\n", "[map[k:1 name:one tier:gold] map[k:3]]", 0},
		{"    on_missing: drop\n", "[map[k:1 name:one tier:gold]]", 0},
		{"    on_missing: dead_letter\n", "[map[k:1 name:one tier:gold]]", 1},
	} {
		eng, _ := yamlLoadEngine(t, tc.param, "")
		res, err := runRows(t, mustFlow(t, eng, "F"), `{"k":1}`, `{"k":3}`)
		var rej *kisflow.RejectedError
		if tc.rejected > 0 && (!errors.As(err, &rej) || len(rej.Rows) != 1 || !strings.Contains(rej.Rows[0].Error(), "no record for key 3")) {
			t.Fatalf("%q: %v, want the row of key 3 rejected", tc.param, err)
		}
		if tc.rejected == 0 && err != nil {
			t.Fatalf("%q: %v", tc.param, err)
		}
		if got := fmt.Sprint(res.Rows); got != tc.want {
			t.Fatalf("%q: rows %s, want %s", tc.param, got, tc.want)
		}
	}
}

func TestYAMLLoadCache(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, params, connParams string
		fetches                  int
	}{
		{"no cache", "", "", 3},
		// Hits and misses alike stay in the cache, shared by forks.
		{"function cache_ttl", "    cache_ttl: 1m\n", "", 1},
		{"connector cache_ttl", "", "  cache_ttl: 1m\n", 1},
		// One key fits: each run fetches the key evicted by the other.
		{"cache_size 1", "    cache_ttl: 1m\n    cache_size: \"1\"\n", "", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			eng, store := yamlLoadEngine(t, tc.params, tc.connParams)
			fl := mustFlow(t, eng, "F")
			for _, f := range []kisflow.Flow{fl, fl, fl.Fork()} {
				res, err := runRows(t, f, `{"k":1}`, `{"k":3}`)
				if err != nil || fmt.Sprint(res.Rows) != "[map[k:1 name:one tier:gold] map[k:3]]" {
					t.Fatalf("%v %v", res.Rows, err)
				}
			}
			if f := store.fetched(); len(f) != tc.fetches {
				t.Fatalf("fetches %v, want %d", f, tc.fetches)
			}
		})
	}
}

func TestYAMLLoadFetchErrorFailsTheRun(t *testing.T) {
	t.Parallel()
	eng, store := yamlLoadEngine(t, "", "")
	store.fail = errors.New("store down")
	_, err := runRows(t, mustFlow(t, eng, "F"), `{"k":1}`)
	var fe *kisflow.FuncError
	if !errors.As(err, &fe) || fe.Func != "L" || !strings.Contains(err.Error(), "store down") {
		t.Fatalf("%v, want the failure of L", err)
	}
}

func (s *fakeStore) LoadParams() []string { return nil }
