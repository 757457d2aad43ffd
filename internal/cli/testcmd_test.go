package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/connector/all"
	"github.com/kisflow-go/kisflow/connector/memory"
	"github.com/kisflow-go/kisflow/stream"
)

// The stock kisflow binary, built once for the tests of `kisflow test`.
var (
	stockOnce sync.Once
	stockBin  string
	stockErr  error
	stockDir  string
)

func stockKisflow(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	stockOnce.Do(func() {
		stockDir, stockErr = os.MkdirTemp("", "kisflow-stock-")
		if stockErr != nil {
			return
		}
		stockBin = filepath.Join(stockDir, "kisflow")
		out, err := exec.Command("go", "build", "-o", stockBin, "github.com/kisflow-go/kisflow/cmd/kisflow").CombinedOutput()
		if err != nil {
			stockErr = errors.New("go build cmd/kisflow: " + err.Error() + "\n" + string(out))
		}
	})
	if stockErr != nil {
		t.Fatal(stockErr)
	}
	return stockBin
}

// kisflowTest runs `BIN test DIR args...` and returns its exit code and
// its output (stdout then stderr).
func kisflowTest(t *testing.T, bin, dir string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"test", dir}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatal(err)
		}
		code = ee.ExitCode()
	}
	return code, out.String() + errb.String()
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// ordersConfig is a flow of YAML functions only: a file source, a filter,
// a calc, a Load from PostgreSQL and a Redis sink, plus a window function.
// Every address is addr, where nothing may connect during a test.
func ordersConfig(addr string) map[string]string {
	return map[string]string{
		"conns.yml": `kistype: conn
cname: orders
type: redis
addrs: ` + addr + `
key: orders_in
params:
  mode: stream
---
kistype: conn
cname: out
type: redis
addrs: ` + addr + `
key: "order:{order_id}"
---
kistype: conn
cname: users
type: postgres
addrs: postgres://kisflow@` + addr + `/test
---
kistype: conn
cname: audit
type: mysql
addrs: root@tcp(` + addr + `)/test
key: audit
`,
		"funcs.yml": `kistype: func
fname: OnlyPaid
fmode: Verify
filter: status == "paid" && qty > 0
---
kistype: func
fname: OrderTotal
fmode: Calculate
calc:
  total: round(qty * price * 100) / 100
keep: [order_id, user_id, total]
---
kistype: func
fname: AddUser
fmode: Load
option:
  cname: users
  default_params:
    load_query: SELECT id AS user_id, name FROM users WHERE id IN (:user_id)
    on_missing: dead_letter
---
kistype: func
fname: Audit
fmode: Save
option:
  cname: audit
---
kistype: func
fname: PerUser
fmode: Calculate
window: {type: tumbling, size: 1m, time_field: ts, group_by: [user_id], aggregate: {orders: count(), revenue: sum(amount)}}
---
kistype: func
fname: PerHour
fmode: Calculate
window: {type: tumbling, size: 1h, aggregate: {orders: count(), revenue: sum(amount)}}
`,
		"flows.yml": `kistype: flow
status: 1
flow_name: PaidOrders
flows:
  - fname: OnlyPaid
  - fname: OrderTotal
  - fname: AddUser
  - fname: Audit
stream:
  source: orders
  sink: out
---
kistype: flow
status: 1
flow_name: Revenue
flows:
  - fname: PerUser
`,
		"tests/orders_test.yml": `kistype: test
name: paid orders get a total and their user
flow: PaidOrders
input:
  - {order_id: 1, user_id: 7, status: paid, qty: 2, price: 9.99}
  - {order_id: 2, user_id: 7, status: open, qty: 1, price: 5}
  - {order_id: 3, user_id: 8, status: paid, qty: 1, price: 5}
  - 'not json'
mocks:
  users:
    records:
      - {user_id: 7, name: Ann}
expect:
  rows:
    - {order_id: 1, user_id: 7, total: 19.98, name: Ann}
  written:
    audit:
      - {order_id: 1, user_id: 7, total: 19.98, name: Ann}
  dead_letters:
    - {row: {order_id: 3, user_id: 8, total: 5}, func: AddUser, reason_contains: no record for key 8}
    - reason_contains: invalid
---
kistype: test
name: revenue per user and minute; the end of the input closes every window
func: PerUser
input:
  - {user_id: 1, amount: 10, ts: 2024-01-01T00:00:10Z}
  - {user_id: 1, amount: 5, ts: "2024-01-01T00:00:50Z"}
  - {user_id: 2, amount: 1, ts: "2024-01-01T00:01:05Z"}
  - {user_id: 1, amount: 3, ts: "2023-12-31T23:00:00Z"}
expect:
  unordered: true
  rows:
    - {user_id: 2, window_start: "2024-01-01T00:01:00Z", window_end: "2024-01-01T00:02:00Z", orders: 1, revenue: 1}
    - {user_id: 1, window_start: 2024-01-01T00:00:00Z, window_end: "2024-01-01T00:01:00Z", orders: 2, revenue: 15}
  dead_letters:
    - {row: {user_id: 1, amount: 3, ts: "2023-12-31T23:00:00Z"}, reason_contains: late row}
---
kistype: test
name: a processing-time window, whose bounds a test cannot know
func: PerHour
input: [{amount: 1}, {amount: 2.5}]
expect:
  rows: [{orders: 2, revenue: 3.5}]
  ignore_fields: [window_start, window_end]
---
kistype: test
name: a test of one function, OnlyPaid
func: OnlyPaid
input:
  - {order_id: 1, status: paid, qty: 0}
  - {order_id: 2, status: paid, qty: 1}
expect:
  rows:
    - {order_id: 2, status: paid, qty: 1}
`,
	}
}

// listener accepts and counts connections on a free local port.
func listener(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String(), &n
}

// kisflow test passes a folder of passing tests, fails with a diff per
// row and field on a failing one, and refuses a broken test with exit 2;
// the flows' Redis, PostgreSQL and MySQL connectors point at a listener
// that no connection reaches.
func TestKisflowTestPassesFailsAndTouchesNoService(t *testing.T) {
	t.Parallel()
	bin := stockKisflow(t)
	addr, conns := listener(t)
	dir := t.TempDir()
	writeFiles(t, dir, ordersConfig(addr))

	code, out := kisflowTest(t, bin, dir)
	if code != ExitOK {
		t.Fatalf("passing tests: exit %d, want 0\n%s", code, out)
	}
	for _, want := range []string{
		`ok    ` + filepath.Join(dir, "tests/orders_test.yml") + `:1 "paid orders get a total and their user" (flow PaidOrders)`,
		`"revenue per user and minute; the end of the input closes every window" (func PerUser)`,
		"ok: 4 test(s) passed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if n := conns.Load(); n != 0 {
		t.Fatalf("kisflow test connected %d time(s) to the services the configuration names; want none", n)
	}

	// A failing test: a wrong total, a missing field, an extra row, an
	// unexpected dead letter and a written row that differs.
	writeFiles(t, dir, map[string]string{"tests/fail_test.yml": `kistype: test
name: wrong expectations
flow: PaidOrders
params: {OnlyPaid: {unused: 1}}
input:
  - {order_id: 1, user_id: 7, status: paid, qty: 2, price: 9.99}
  - {order_id: 4, user_id: 7, status: paid, qty: 1, price: 1}
  - {order_id: 5, user_id: 9, status: paid, qty: 1, price: 1}
mocks:
  users:
    records:
      - {user_id: 7, name: Ann, tier: gold}
expect:
  rows:
    - {order_id: 1, user_id: 7, total: 19.99, name: Ann, tier: gold, note: x}
  written:
    audit: []
`})
	code, out = kisflowTest(t, bin, dir)
	if code != ExitProblem {
		t.Fatalf("a failing test: exit %d, want 1\n%s", code, out)
	}
	for _, want := range []string{
		`FAIL  ` + filepath.Join(dir, "tests/fail_test.yml") + `:1 "wrong expectations" (flow PaidOrders)`,
		"rows: want 1, got 2",
		"rows[0]: field total: want 19.99, got 19.98",
		"rows[0]: field note: want \"x\", got no such field",
		`rows[1]: not expected, got {"name":"Ann","order_id":4,"tier":"gold","total":1,"user_id":7}`,
		`dead letter not expected: {"order_id":5,"total":1,"user_id":9} from AddUser: `,
		"written[audit]: want 0, got 2",
		`written[audit][0]: not expected, got {"name":"Ann","order_id":1,"tier":"gold","total":19.98,"user_id":7}`,
		"kisflow: 1 of 5 test(s) failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if code, out := kisflowTest(t, bin, dir, "--run", "revenue"); code != ExitOK || !strings.Contains(out, "ok: 1 test(s) passed") {
		t.Errorf("--run revenue: exit %d\n%s", code, out)
	}

	// A test the configuration cannot run: no mocks for a Load, a typo.
	writeFiles(t, dir, map[string]string{"tests/fail_test.yml": `kistype: test
flow: PaidOrders
input: [{order_id: 1}]
expect: {rowz: []}
`})
	code, out = kisflowTest(t, bin, dir)
	if code != ExitUsage {
		t.Fatalf("a broken test: exit %d, want 2\n%s", code, out)
	}
	for _, want := range []string{
		`fail_test.yml:4: test: unknown key "rowz" in expect (did you mean rows?)`,
		`fail_test.yml:1: test: function "AddUser" loads through connector "users" (type postgres), which a test does not contact: give the records it holds, as`,
		"no test ran",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	// The folder is linted first: a lint error is exit 2, no test runs.
	writeFiles(t, dir, map[string]string{"tests/fail_test.yml": "kistype: func\nfname: Broken\nfmode: Verify\nfilter: status = 1\n"})
	code, out = kisflowTest(t, bin, dir)
	if code != ExitUsage || !strings.Contains(out, `unknown operator "="`) || strings.Contains(out, "ok    ") {
		t.Fatalf("a lint error: exit %d, want 2 with the lint error and no test run\n%s", code, out)
	}
	if n := conns.Load(); n != 0 {
		t.Fatalf("kisflow test connected %d time(s) to the services the configuration names; want none", n)
	}
}

// testOrder is the row type of the Go functions of TestKisflowTestGoFunctions.
type testOrder struct {
	ID     int     `json:"id"`
	Amount float64 `json:"amount"`
	Tax    float64 `json:"tax,omitempty"`
}

// A project's own Go functions run under `kisflow test` as under run
// (app.Run is this Main over the project's registry): a typed function, a
// failing row dead-lettered with the function's name and error, and a Save
// through a memory connector whose appended rows are checked as written.
func TestKisflowTestGoFunctions(t *testing.T) {
	t.Parallel()
	reg := kisflow.NewRegistry()
	if err := all.Install(reg); err != nil {
		t.Fatal(err)
	}
	reg.MustRegister("Tax", kisflow.Func(func(ctx context.Context, f kisflow.Flow, rows []*testOrder) error {
		for _, o := range rows {
			if o.Amount < 0 {
				return stream.Permanent(fmt.Errorf("order %d: negative amount", o.ID))
			}
			o.Tax = o.Amount / 10
			if err := f.CommitRow(o); err != nil {
				return err
			}
		}
		return nil
	}))
	reg.MustRegister("Keep", kisflow.FuncRows(func(ctx context.Context, f kisflow.Flow, rows []any) error {
		c, err := f.Connector()
		if err != nil {
			return err
		}
		if _, ok := c.Driver().(*memory.Store); !ok {
			return fmt.Errorf("connector kept is a %T, not the memory store", c.Driver())
		}
		if _, err := c.Call(ctx, f, rows); err != nil {
			return err
		}
		return f.CommitRowBatch(rows)
	}))
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"conf.yml": `kistype: conn
cname: kept
type: memory
key: orders
---
kistype: func
fname: Tax
fmode: Calculate
---
kistype: func
fname: Keep
fmode: Save
option: {cname: kept}
---
kistype: flow
status: 1
flow_name: Orders
flows: [{fname: Tax}, {fname: Keep}]
`,
		"orders_test.yml": `kistype: test
flow: Orders
input:
  - {id: 1, amount: 100}
  - {id: 2, amount: -5}
  - {id: 3, amount: 20}
expect:
  rows: [{id: 1, amount: 100, tax: 10}, {id: 3, amount: 20, tax: 2}]
  written:
    kept: [{id: 1, amount: 100, tax: 10}, {id: 3, amount: 20, tax: 2}]
  dead_letters:
    - {row: {id: 2, amount: -5}, func: Tax, reason_contains: "order 2: negative amount"}
`,
	})
	var out, errb bytes.Buffer
	if code := Main(reg, []string{"test", dir}, &out, &errb); code != ExitOK {
		t.Fatalf("exit %d\n%s%s", code, out.String(), errb.String())
	}
	// The same test with a wrong expectation of the Go function fails.
	writeFiles(t, dir, map[string]string{"wrong_test.yml": `kistype: test
func: Tax
input: [{id: 4, amount: 50}]
expect:
  rows: [{id: 4, amount: 50, tax: 6}]
`})
	out.Reset()
	errb.Reset()
	if code := Main(reg, []string{"test", dir}, &out, &errb); code != ExitProblem || !strings.Contains(out.String(), "rows[0]: field tax: want 6, got 5") {
		t.Fatalf("a failing test of a Go function: exit %d, want 1 with a diff\n%s%s", code, out.String(), errb.String())
	}
}
