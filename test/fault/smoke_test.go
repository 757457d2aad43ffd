package fault

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fileToSQLite is a config folder: n JSON lines ids -> a calc -> an SQLite
// table out(id), with the given delivery.
func fileToSQLite(t testing.TB, n int, delivery string) string {
	t.Helper()
	return Dir(t, map[string]string{
		"ids.jsonl": IDLines(n, func(i int) string { return fmt.Sprintf(`{"id":%d,"qty":%d}`, i, i%5) }),
		"flow.yml": `kistype: flow
status: 1
flow_name: Ids
flows:
  - fname: Double
stream:
  source: ids
  sink: db
  delivery: ` + delivery + `
  batch_size: 100
`,
		"funcs.yml": `kistype: func
fname: Double
fmode: Calculate
calc:
  twice: qty * 2
keep: [id, twice]
`,
		"conns.yml": `kistype: conn
cname: ids
type: file
params:
  path: ids.jsonl
---
kistype: conn
cname: db
type: sqlite
key: out
params:
  path: out.db
  create: "true"
  columns: id,twice
`,
	})
}

func TestABoundedRunWritesEveryRowOnce(t *testing.T) {
	t.Parallel()
	for _, delivery := range []string{"at-least-once", "exactly-once"} {
		t.Run(delivery, func(t *testing.T) {
			t.Parallel()
			const n = 2500
			dir := fileToSQLite(t, n, delivery)
			res := Run(t, dir, 2*time.Minute, "run", dir, "--state", filepath.Join(dir, "state"), "--progress", "never")
			if res.Code != 0 {
				t.Fatalf("exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
			}
			if !strings.Contains(res.Stdout+res.Stderr, fmt.Sprintf("%d rows read", n)) {
				t.Errorf("the summary does not say %d rows read:\n%s%s", n, res.Stdout, res.Stderr)
			}
			if bad := Check(SQLiteCounts(t, filepath.Join(dir, "out.db"), "SELECT id FROM out"), n, true); len(bad) > 0 {
				t.Fatalf("sink: %v", bad)
			}
		})
	}
}
