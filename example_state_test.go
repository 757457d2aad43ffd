package kisflow_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/connector/file"
	kissql "github.com/kisflow-go/kisflow/connector/sql"
)

// Order is a row of the keyed-state example.
type Order struct {
	User   string  `json:"user"`
	Amount float64 `json:"amount"`
}

// Per user: how many orders (a ValueState that expires a day after the
// user's last order) and the total amount per band of order size (a
// MapState). The state commits with the rows, exactly once, in the SQLite
// sink's transaction.
var (
	orders = kisflow.NewValueState[int]("orders", kisflow.StateTTL(24*time.Hour))
	bands  = kisflow.NewMapState[string, float64]("bands")
)

// CountOrders keeps the state of each order's user and emits the user's
// count so far.
func CountOrders(ctx context.Context, f kisflow.Flow, rows []*Order) error {
	for _, o := range rows {
		n, _, err := orders.Get(f, o.User)
		if err != nil {
			return err
		}
		if err := orders.Set(f, o.User, n+1); err != nil {
			return err
		}
		band := "small"
		if o.Amount >= 100 {
			band = "large"
		}
		sum, _, err := bands.Get(f, o.User, band)
		if err != nil {
			return err
		}
		if err := bands.Put(f, o.User, band, sum+o.Amount); err != nil {
			return err
		}
		if err := f.CommitRow(map[string]any{"user": o.User, "orders": n + 1}); err != nil {
			return err
		}
	}
	return nil
}

func Example_keyedState() {
	dir, _ := os.MkdirTemp("", "state-example")
	defer os.RemoveAll(dir)
	files := map[string]string{
		"orders.jsonl": `{"user":"ann","amount":30}
{"user":"bob","amount":120}
{"user":"ann","amount":250}
{"user":"ann","amount":10}
`,
		"flow.yml": `kistype: flow
status: 1
flow_name: Orders
flows:
  - fname: CountOrders
stream:
  source: orders
  sink: db
  delivery: exactly-once
  workers: 2
  key: user        # each user's rows go to one worker, in order
`,
		"funcs.yml": "kistype: func\nfname: CountOrders\nfmode: Calculate\n",
		"conns.yml": `kistype: conn
cname: orders
type: file
params:
  path: orders.jsonl
---
kistype: conn
cname: db
type: sqlite
key: counts
params:
  path: out.db
  create: "true"
`,
	}
	for name, data := range files {
		_ = os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644)
	}
	reg := kisflow.NewRegistry()
	_ = file.Install(reg)
	_ = kissql.Install(reg)
	reg.MustRegister("CountOrders", kisflow.Func(CountOrders))
	set, err := config.Import(dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	eng, _ := kisflow.NewEngine(reg, set)
	defer eng.Close(ctx)
	job, err := eng.Job(ctx, "Orders", kisflow.WithStateDir(filepath.Join(dir, "state")))
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := job.Run(ctx); err != nil {
		fmt.Println(err)
		return
	}
	// The state is in the sink's database, next to the rows.
	db, _ := sql.Open("sqlite", filepath.Join(dir, "out.db"))
	defer db.Close()
	rows, _ := db.Query("SELECT name, skey, field, value FROM kisflow_state ORDER BY name, skey, field")
	defer rows.Close()
	for rows.Next() {
		var name, key, field, value string
		_ = rows.Scan(&name, &key, &field, &value)
		if field != "" {
			field, _ = strconv.Unquote(field)
		}
		fmt.Println(name, key, field, value)
	}
	// Output:
	// bands ann large 250
	// bands ann small 40
	// bands bob large 120
	// orders ann  3
	// orders bob  1
}
