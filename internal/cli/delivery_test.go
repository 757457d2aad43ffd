package cli

import (
	"database/sql"
	"path/filepath"
	"strings"
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

// A change of stream.delivery between runs moves where the flow's position
// is kept (the exactly-once sink's table, the checkpoint store): the next
// run takes the position over from where the other delivery kept it, and
// says so, instead of reading the file from the start and writing every
// row again. Both ways, and back again (the store of the first delivery
// then holds an older position, which is not the one taken).
func TestChangingDeliveryKeepsThePosition(t *testing.T) {
	t.Parallel()
	for _, first := range []string{"exactly-once", "at-least-once"} {
		t.Run(first, func(t *testing.T) {
			t.Parallel()
			second := map[string]string{"exactly-once": "at-least-once", "at-least-once": "exactly-once"}[first]
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
