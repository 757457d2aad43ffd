package kisflow_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/connector/memory"
	"github.com/kisflow-go/kisflow/internal/testenv"
)

type total struct {
	Worker int
	Sum    int
}

func TestFork8WayShareConnectors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	reg := kisflow.NewRegistry()
	if err := memory.Install(reg); err != nil {
		t.Fatal(err)
	}
	reg.MustRegister("Sum", kisflow.Func(func(ctx context.Context, f kisflow.Flow, rows []*score) error {
		sum := 0
		for _, r := range rows {
			sum += r.Score
		}
		w, _ := f.Meta("worker").(int)
		return f.CommitRow(&total{Worker: w, Sum: sum})
	}))
	reg.MustRegister("Store", kisflow.Func(func(ctx context.Context, f kisflow.Flow, rows []*total) error {
		c, err := f.Connector()
		if err != nil {
			return err
		}
		for _, r := range rows {
			if _, err := c.Call(ctx, f, r); err != nil {
				return err
			}
			_ = f.CommitRow(r)
		}
		return nil
	}))
	docs := map[string]string{
		"flow.yml":  "kistype: flow\nstatus: 1\nflow_name: Totals\nflows:\n  - fname: Sum\n  - fname: Store\n",
		"sum.yml":   "kistype: func\nfname: Sum\nfmode: Calculate\n",
		"store.yml": "kistype: func\nfname: Store\nfmode: Save\noption:\n  cname: Mem\n",
		"conn.yml":  "kistype: conn\ncname: Mem\ntype: memory\nkey: totals\nsave:\n  - Store\n",
	}
	set, err := config.ImportFS(mapFS(docs), ".")
	if err != nil {
		t.Fatal(err)
	}
	eng, err := kisflow.NewEngine(reg, set)
	if err != nil {
		t.Fatal(err)
	}
	base := mustFlow(t, eng, "Totals")
	const workers, batches = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	ids := make(chan string, workers)
	for w := range workers {
		fl := base.Fork()
		fl.SetMeta("worker", w)
		ids <- fl.ID()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range batches {
				for i := range 10 {
					_ = fl.CommitRow(&score{ID: i, Score: w*1000 + b})
				}
				res, err := fl.Run(ctx)
				if err != nil {
					errs <- err
					return
				}
				got := res.Rows[0].(*total)
				if got.Worker != w || got.Sum != 10*(w*1000+b) {
					errs <- fmt.Errorf("worker %d batch %d: got %+v", w, b, got)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	close(ids)
	for err := range errs {
		t.Error(err)
	}
	seen := map[string]bool{base.ID(): true}
	for id := range ids {
		if seen[id] {
			t.Errorf("fork ID %s is not unique", id)
		}
		seen[id] = true
	}

	conn, err := eng.Connector(ctx, "Mem")
	if err != nil {
		t.Fatal(err)
	}
	st := conn.Driver().(*memory.Store)
	rows := st.Rows("")
	if len(rows) != workers*batches {
		t.Fatalf("stored %d totals, want %d", len(rows), workers*batches)
	}
	perWorker := map[int]int{}
	for _, r := range rows {
		perWorker[r.(*total).Worker]++
	}
	for w := range workers {
		if perWorker[w] != batches {
			t.Errorf("worker %d stored %d totals", w, perWorker[w])
		}
	}
	// A second flow instance shares the started connector.
	if _, err := eng.Flow(ctx, "Totals"); err != nil {
		t.Fatal(err)
	}
	if err := eng.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := eng.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if st.Starts() != 1 || st.Closes() != 1 {
		t.Fatalf("connector started %d times and closed %d times, want once each", st.Starts(), st.Closes())
	}
}

func TestConnectorCallbacks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	reg := kisflow.NewRegistry()
	if err := memory.Install(reg); err != nil {
		t.Fatal(err)
	}
	var inits []string
	if err := reg.RegisterConnInit("Mem", func(ctx context.Context, c *kisflow.Connector) error {
		inits = append(inits, c.Name()+"/"+c.Type())
		c.SetMeta("prefix", "user:")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// A custom Save (CaaS) for function Save on connector Mem.
	if err := reg.RegisterConnFunc("Mem", "Save", func(ctx context.Context, c *kisflow.Connector, fn *kisflow.Function, f kisflow.Flow, args any) (any, error) {
		s := args.(*score)
		key := c.Meta("prefix").(string) + fmt.Sprint(s.ID)
		return key, c.Driver().(*memory.Store).Put(key, s.Score)
	}); err != nil {
		t.Fatal(err)
	}
	var keys []string
	reg.MustRegister("Save", kisflow.Func(func(ctx context.Context, f kisflow.Flow, rows []*score) error {
		c, err := f.Connector()
		if err != nil {
			return err
		}
		for _, r := range rows {
			k, err := c.Call(ctx, f, r)
			if err != nil {
				return err
			}
			keys = append(keys, k.(string))
		}
		return nil
	}))
	eng := testenv.Engine(t, reg, map[string]string{
		"flow.yml": "kistype: flow\nstatus: 1\nflow_name: F\nflows:\n  - fname: Save\n",
		"func.yml": "kistype: func\nfname: Save\nfmode: Save\noption:\n  cname: Mem\n",
		"conn.yml": "kistype: conn\ncname: Mem\ntype: memory\n",
	})
	fl := mustFlow(t, eng, "F")
	_ = fl.CommitRowBatch([]*score{{ID: 1, Score: 10}, {ID: 2, Score: 20}})
	if _, err := fl.Run(ctx); err != nil {
		t.Fatal(err)
	}
	sort.Strings(keys)
	if fmt.Sprint(keys) != "[user:1 user:2]" || fmt.Sprint(inits) != "[Mem/memory]" {
		t.Fatalf("keys %v inits %v", keys, inits)
	}
	c, _ := eng.Connector(ctx, "Mem")
	if v, ok, _ := c.Driver().(*memory.Store).Get("user:2"); !ok || v != 20 {
		t.Fatalf("stored %v %v", v, ok)
	}
	if _, err := c.Call(ctx, fl, 1); err == nil {
		t.Fatal("Call outside a running function: no error")
	}
}

func TestForkHasItsOwnCacheAndMeta(t *testing.T) {
	t.Parallel()
	reg := kisflow.NewRegistry()
	reg.MustRegister("A", kisflow.FuncRows(func(ctx context.Context, f kisflow.Flow, rows []any) error {
		fn := f.Function()
		n, _ := fn.Cache("calls")
		c, _ := n.(int)
		fn.SetCache("calls", c+1, time.Hour)
		return f.CommitRow(c + 1)
	}))
	fl := mustFlow(t, testenv.Engine(t, reg, chain("F", "A")), "F")
	fl.SetCache("forever", 2, 0)
	fl.SetMeta("m", "parent")
	fork := fl.Fork()
	if _, ok := fork.Cache("forever"); ok || fork.Meta("m") != nil {
		t.Fatal("a fork shares its parent's cache or metadata")
	}
	run := func(f kisflow.Flow) any {
		_ = f.CommitRow(0)
		res, err := f.Run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return res.Rows[0]
	}
	if a, b, c := run(fl), run(fl), run(fork); a != 1 || b != 2 || c != 1 {
		t.Fatalf("function cache per instance: got %v %v %v, want 1 2 1", a, b, c)
	}
}

// sinkDriver is a connector driver that is only a stream sink.
type sinkDriver struct {
	mu   sync.Mutex
	rows []any
}

func (d *sinkDriver) Start(context.Context) error { return nil }
func (d *sinkDriver) Close(context.Context) error { return nil }
func (d *sinkDriver) Write(_ context.Context, rows []any) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rows = append(d.rows, rows...)
	return nil
}

func TestSaveWritesThroughASinkDriver(t *testing.T) {
	t.Parallel()
	drv := &sinkDriver{}
	reg := kisflow.NewRegistry()
	_ = reg.RegisterDriver("sinkonly", func(*config.Conn) (kisflow.Driver, error) { return drv, nil })
	call := func(ctx context.Context, f kisflow.Flow, rows []any) error {
		c, err := f.Connector()
		if err != nil {
			return err
		}
		_, err = c.Call(ctx, f, rows)
		return err
	}
	reg.MustRegister("Store", kisflow.FuncRows(call))
	reg.MustRegister("Peek", kisflow.FuncRows(call))
	eng := testenv.Engine(t, reg, map[string]string{
		"flows.yml": "kistype: flow\nstatus: 1\nflow_name: S\nflows:\n  - fname: Store\n---\nkistype: flow\nstatus: 1\nflow_name: L\nflows:\n  - fname: Peek\n",
		"funcs.yml": "kistype: func\nfname: Store\nfmode: Save\noption:\n  cname: out\n---\nkistype: func\nfname: Peek\nfmode: Load\noption:\n  cname: out\n",
		"conn.yml":  "kistype: conn\ncname: out\ntype: sinkonly\n",
	})
	ctx := context.Background()
	fl := mustFlow(t, eng, "S")
	_ = fl.CommitRowBatch([]any{"a", "b"})
	if _, err := fl.Run(ctx); err != nil || fmt.Sprint(drv.rows) != "[a b]" {
		t.Fatalf("save: %v, rows %v", err, drv.rows)
	}
	fl = mustFlow(t, eng, "L")
	_ = fl.CommitRow("c")
	if _, err := fl.Run(ctx); err == nil || !strings.Contains(err.Error(), "serves Save functions only") {
		t.Fatalf("a Load function through a sink-only type: %v", err)
	}
}
