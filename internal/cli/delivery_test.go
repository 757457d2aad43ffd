package cli

import (
	"database/sql"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// deliveryDir writes a flow F from the JSON lines file in.jsonl (follow
// as given) into the SQLite table out of out.db, with delivery delivery.
func deliveryDir(t *testing.T, dir, delivery string, follow bool) {
	t.Helper()
	fl := "false"
	if follow {
		fl = "true"
	}
	writeFiles(t, dir, map[string]string{
		"flow.yml":  "kistype: flow\nstatus: 1\nflow_name: F\nflows:\n  - fname: Keep\nstream:\n  source: in\n  sink: db\n  delivery: " + delivery + "\n  batch_size: 100\n",
		"funcs.yml": keepFunc,
		"conns.yml": "kistype: conn\ncname: in\ntype: file\nparams:\n  path: in.jsonl\n  follow: \"" + fl + "\"\n  poll: 20ms\n---\nkistype: conn\ncname: db\ntype: sqlite\nkey: out\nparams:\n  path: out.db\n  create: \"true\"\n  columns: id\n",
	})
}

// otherDelivery maps each delivery that keeps positions in another store
// to the other.
var otherDelivery = map[string]string{"exactly-once": "at-least-once", "at-least-once": "exactly-once"}

// A change of stream.delivery between runs moves where the flow's position
// is kept (the exactly-once sink's table, the checkpoint store): the next
// run takes the position over from where the other delivery kept it, and
// says so, instead of reading the file from the start and writing every
// row again. Both ways, and back again (the store of the first delivery
// then holds an older position, which is not the one taken).
func TestChangingDeliveryKeepsThePosition(t *testing.T) {
	t.Parallel()
	for first, second := range otherDelivery {
		t.Run(first, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			deliveryDir(t, dir, first, false)
			appendIDs(t, filepath.Join(dir, "in.jsonl"), 1, 1000)
			if code, stdout, stderr := run(t, "run", dir); code != 0 {
				t.Fatalf("run %s: exit %d\n%s%s", first, code, stdout, stderr)
			}
			each(t, "after the "+first+" run", sqliteIDs(t, dir), 1000, 1)

			deliveryDir(t, dir, second, false)
			if code, stdout, stderr := run(t, "positions", dir); code != 0 || !strings.Contains(stdout, "next run takes over") {
				t.Fatalf("positions after the change of delivery: exit %d, want the position to be taken over shown\n%s%s", code, stdout, stderr)
			}
			code, stdout, stderr := run(t, "run", dir)
			if code != 0 {
				t.Fatalf("run %s: exit %d\n%s%s", second, code, stdout, stderr)
			}
			if !strings.Contains(stdout, "flow F: position ") || !strings.Contains(stdout, " taken over from ") || strings.Contains(stdout, "reading from the start") {
				t.Fatalf("the %s run did not say it took the position over:\n%s%s", second, stdout, stderr)
			}
			each(t, "after the "+second+" run", sqliteIDs(t, dir), 1000, 1)

			appendIDs(t, filepath.Join(dir, "in.jsonl"), 1001, 1100)
			if code, stdout, stderr := run(t, "run", dir); code != 0 {
				t.Fatalf("second %s run: exit %d\n%s%s", second, code, stdout, stderr)
			}
			each(t, "after more rows", sqliteIDs(t, dir), 1100, 1)

			// Back to the first delivery: its store holds the position
			// of the first run, older than the other's.
			deliveryDir(t, dir, first, false)
			code, stdout, stderr = run(t, "run", dir)
			if code != 0 || !strings.Contains(stdout, " taken over from ") {
				t.Fatalf("run %s again: exit %d, want the newer position taken over\n%s%s", first, code, stdout, stderr)
			}
			each(t, "after the change back", sqliteIDs(t, dir), 1100, 1)
			if code, stdout, stderr := run(t, "positions", dir); code != 0 || strings.Contains(stdout, "next run takes over") || !strings.Contains(stdout, "F ") {
				t.Fatalf("positions after the takeover: exit %d\n%s%s", code, stdout, stderr)
			}
		})
	}
}

// Under run --watch a change of stream.delivery restarts the flow, which
// takes over its position instead of reading the file again.
func TestWatchChangingDeliveryKeepsThePosition(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	deliveryDir(t, dir, "exactly-once", true)
	appendIDs(t, filepath.Join(dir, "in.jsonl"), 1, 1000)
	cmd, done := childArgs(t, []string{"run", "--watch", dir, "--log-level", "warn"})
	out := cmd.Stdout.(*syncBuffer)
	waitFor(t, "1000 rows in the exactly-once sink", 30*time.Second, func() bool { return distinctIDs(dir) == 1000 })
	deliveryDir(t, dir, "at-least-once", true)
	waitFor(t, "the restarted flow to take its position over", 30*time.Second, func() bool {
		select {
		case <-done:
			t.Fatalf("the watch ended:\n%s", out.String())
		default:
		}
		return strings.Contains(out.String(), " taken over from sink db")
	})
	appendIDs(t, filepath.Join(dir, "in.jsonl"), 1001, 1100)
	waitFor(t, "1100 rows in the sink", 30*time.Second, func() bool { return distinctIDs(dir) == 1100 })
	time.Sleep(300 * time.Millisecond) // rows written again would come with these
	each(t, "after the change of delivery under --watch", sqliteIDs(t, dir), 1100, 1)
	if strings.Count(out.String(), "reading from the start") > 1 {
		t.Fatalf("the restarted flow read from the start:\n%s", out.String())
	}
}

// distinctIDs counts the distinct ids of the table out of dir/out.db, 0
// while it cannot be read (not made yet).
func distinctIDs(dir string) int {
	db, err := sql.Open("sqlite", filepath.Join(dir, "out.db"))
	if err != nil {
		return 0
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT COUNT(DISTINCT id) FROM out").Scan(&n); err != nil {
		return 0
	}
	return n
}

// A connector that listens (the http source) on the admin server's
// address is a lint error at its addrs line, for the admin server of a
// metrics plugin and for KisFlow's prometheus_serve: run refuses the folder,
// and under run --watch a global file edited to that address is not
// applied. Before, the admin server took the port and the source waited
// for ever ("bind: address already in use").
func TestLintRefusesAConnectorOnTheAdminAddress(t *testing.T) {
	t.Parallel()
	flow := "kistype: flow\nstatus: 1\nflow_name: F\nflows:\n  - fname: Keep\nstream:\n  source: in\n  sink: out\n"
	conns := func(addr string) string {
		return "kistype: conn\ncname: in\ntype: http\naddrs: " + addr + "\n---\nkistype: conn\ncname: out\ntype: file\nparams:\n  path: out.jsonl\n"
	}
	for _, tc := range []struct{ name, global, addr, want string }{
		{"prometheus_serve", "kistype: global\nprometheus_enable: true\nprometheus_listen: true\nprometheus_serve: 127.0.0.1:28717\n", "127.0.0.1:28717",
			`conns.yml:4: connector "in" (type http) listens on 127.0.0.1:28717, the address of the admin server (prometheus_serve)`},
		{"metrics plugin, a bare port", "kistype: global\nplugins:\n  metrics:\n    admin: {listen: \":28717\"}\n", "0.0.0.0:28717",
			`conns.yml:4: connector "in" (type http) listens on 0.0.0.0:28717, the address of the admin server (plugin metrics.admin)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"flow.yml": flow, "funcs.yml": keepFunc, "conns.yml": conns(tc.addr), "global.yml": tc.global})
			for _, cmd := range []string{"lint", "run"} {
				code, stdout, stderr := run(t, cmd, dir)
				if code == 0 || !strings.Contains(stdout+stderr, tc.want) {
					t.Fatalf("%s: exit %d, want an error %q\n%s%s", cmd, code, tc.want, stdout, stderr)
				}
			}
			// Another port is fine.
			writeFiles(t, dir, map[string]string{"conns.yml": conns("127.0.0.1:28718")})
			if code, stdout, stderr := run(t, "lint", dir); code != 0 {
				t.Fatalf("lint with another port: exit %d\n%s%s", code, stdout, stderr)
			}
		})
	}
}

// Under run --watch, a global file edited so that the admin server's
// address is an http source's is refused, and the source goes on.
func TestWatchRefusesTheAdminServerOnAConnectorsAddress(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	port := closedPort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	writeFiles(t, dir, map[string]string{
		"flow.yml":  "kistype: flow\nstatus: 1\nflow_name: F\nflows:\n  - fname: Keep\nstream:\n  source: in\n  sink: out\n",
		"funcs.yml": keepFunc,
		"conns.yml": "kistype: conn\ncname: in\ntype: http\naddrs: " + addr + "\n---\nkistype: conn\ncname: out\ntype: file\nparams:\n  path: out.jsonl\n",
	})
	cmd, done := childArgs(t, []string{"run", "--watch", dir, "--log-level", "warn"})
	out := cmd.Stdout.(*syncBuffer)
	waitFor(t, "the watch to start", 30*time.Second, func() bool { return strings.Contains(out.String(), "watch: watching") })
	writeFiles(t, dir, map[string]string{"global.yml": "kistype: global\nprometheus_enable: true\nprometheus_listen: true\nprometheus_serve: " + addr + "\n"})
	want := `conns.yml:4: connector "in" (type http) listens on ` + addr + `, the address of the admin server (prometheus_serve)`
	waitFor(t, "the watch to refuse the change", 30*time.Second, func() bool {
		select {
		case <-done:
			t.Fatalf("the watch ended:\n%s", out.String())
		default:
		}
		return strings.Contains(out.String(), want) && strings.Contains(out.String(), "the change is not applied")
	})
	resp, err := http.Post("http://"+addr+"/ingest", "application/json", strings.NewReader("{\"id\":1}\n"))
	if err != nil {
		t.Fatalf("the http source no longer answers: %v\n%s", err, out.String())
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("POST /ingest: %s\n%s", resp.Status, out.String())
	}
}

// An SQLite or file sink whose folder can never be made (under /proc, or
// under a file) fails the run with the error, as a bad config does, instead of
// waiting for ever for it as for an outage.
func TestRunFailsOnASinkPathThatCannotBeMade(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, typ, path, want string }{
		{"under /proc", "sqlite", "/proc/adv/x.db", "mkdir /proc/adv: no such file or directory"},
		{"under a file", "sqlite", "in.jsonl/x.db", "not a directory"},
		{"a file sink under /proc", "file", "/proc/adv/out.jsonl", "mkdir /proc/adv: no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			deliveryDir(t, dir, "at-least-once", false)
			writeFiles(t, dir, map[string]string{"conns.yml": "kistype: conn\ncname: in\ntype: file\nparams:\n  path: in.jsonl\n---\nkistype: conn\ncname: db\ntype: " + tc.typ + "\nkey: out\nparams:\n  path: " + tc.path + "\n  create: \"true\"\n  columns: id\n"})
			if tc.typ == "file" {
				writeFiles(t, dir, map[string]string{"conns.yml": "kistype: conn\ncname: in\ntype: file\nparams:\n  path: in.jsonl\n---\nkistype: conn\ncname: db\ntype: file\nparams:\n  path: " + tc.path + "\n"})
			}
			appendIDs(t, filepath.Join(dir, "in.jsonl"), 1, 10)
			cmd, done := childArgs(t, []string{"run", dir})
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Fatalf("the run still waits after 20s:\n%s", cmd.Stdout.(*syncBuffer).String())
			}
			out := cmd.Stdout.(*syncBuffer).String()
			if cmd.ProcessState.ExitCode() != ExitProblem || !strings.Contains(out, tc.want) || strings.Contains(out, "waiting for connector") {
				t.Fatalf("run: exit %d, want %d with %q and no wait\n%s", cmd.ProcessState.ExitCode(), ExitProblem, tc.want, out)
			}
		})
	}
}

// The open windows of a flow come with its position when its
// stream.delivery changes: a window that spans the change is emitted once,
// with all its orders, not with those after the change alone.
func TestChangingDeliveryKeepsOpenWindows(t *testing.T) {
	t.Parallel()
	for first, second := range otherDelivery {
		t.Run(first, func(t *testing.T) {
			t.Parallel()
			const n = 600
			dir := t.TempDir()
			orders, want := windowOrders(n, time.Minute, nil)
			lines := strings.SplitAfter(orders, "\n")
			files := func(delivery string) map[string]string {
				return map[string]string{
					"flow.yml":  "kistype: flow\nstatus: 1\nflow_name: Revenue\nflows:\n  - fname: PerUser\nstream:\n  source: orders\n  sink: db\n  delivery: " + delivery + "\n  batch_size: 10\n",
					"funcs.yml": "kistype: func\nfname: PerUser\nfmode: Calculate\nwindow: {type: tumbling, size: 1m, time_field: ts, lateness: 20s,\n         group_by: [user_id], aggregate: {orders: count(), revenue: sum(amount)}}\n",
					"conns.yml": "kistype: conn\ncname: orders\ntype: file\nparams:\n  path: orders.jsonl\n  follow: \"true\"\n  poll: 20ms\n---\nkistype: conn\ncname: db\ntype: sqlite\nkey: out\nparams:\n  path: out.db\n  create: \"true\"\n  columns: user_id, window_start, window_end, orders, revenue\n",
				}
			}
			runUntilCaughtUp := func(delivery string) string {
				t.Helper()
				cmd, done := childArgs(t, []string{"run", dir})
				waitFor(t, "the "+delivery+" run to commit every order", 60*time.Second, func() bool {
					select {
					case <-done:
						t.Fatalf("the run ended:\n%s", cmd.Stdout.(*syncBuffer).String())
					default:
					}
					_, out, _ := run(t, "positions", dir)
					return strings.Contains(out, " 0 bytes")
				})
				_ = cmd.Process.Signal(syscall.SIGTERM)
				<-done
				return cmd.Stdout.(*syncBuffer).String()
			}
			writeFiles(t, dir, files(first))
			const split = n/2 + 7 // within a window, not at its end
			writeFiles(t, dir, map[string]string{"orders.jsonl": strings.Join(lines[:split], "")})
			runUntilCaughtUp(first)
			writeFiles(t, dir, files(second))
			f, err := os.OpenFile(filepath.Join(dir, "orders.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteString(strings.Join(lines[split:], "")); err != nil {
				t.Fatal(err)
			}
			f.Close()
			if out := runUntilCaughtUp(second); !strings.Contains(out, " taken over from ") {
				t.Fatalf("the %s run did not take the position over:\n%s", second, out)
			}
			got, rows, _ := windowRows(t, dir)
			if rows != len(got) {
				t.Errorf("%d rows for %d windows: some window was written twice", rows, len(got))
			}
			for k, v := range got {
				if want[k] != v {
					t.Errorf("window %s: got %q (orders revenue), want %q", k, v, want[k])
				}
			}
			// Every window that ends two minutes before the last order
			// (24 minutes of event time, lateness 20s) is emitted: those
			// open at the change too.
			last := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC).Add(n * 2400 * time.Millisecond)
			missing := 0
			for k := range want {
				f := strings.Fields(k)
				end, err := time.Parse(time.RFC3339, f[2])
				if err != nil {
					t.Fatal(err)
				}
				if _, ok := got[k]; !ok && end.Before(last.Add(-2*time.Minute)) {
					missing++
				}
			}
			if missing > 0 {
				t.Fatalf("%d windows that closed before the last order were not emitted (%d of %d emitted)", missing, len(got), len(want))
			}
		})
	}
}
