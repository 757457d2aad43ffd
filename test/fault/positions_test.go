package fault

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Issue 11, item 4: positions that cannot collide. idsConfig is a config
// folder (under root/name) whose flow Ids reads source (a connector
// document) into the SQLite table out of out.db, with delivery.
func idsConfig(name, source, delivery string) map[string]string {
	return map[string]string{
		name + "/flow.yml": `kistype: flow
status: 1
flow_name: Ids
flows:
  - fname: Double
stream:
  source: ids
  sink: db
  delivery: ` + delivery + `
  batch_size: 100
---
kistype: func
fname: Double
fmode: Calculate
calc:
  twice: id * 2
keep: [id, twice]
`,
		name + "/conns.yml": source + `
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
	}
}

const fileSource = `kistype: conn
cname: ids
type: file
params:
  path: ids.jsonl`

func generatorSource(n int) string {
	return fmt.Sprintf(`kistype: conn
cname: ids
type: generator
params:
  count: "%d"
  format: map`, n)
}

func idLines(from, to int) string {
	var b strings.Builder
	for i := from; i <= to; i++ {
		fmt.Fprintf(&b, "{\"id\":%d}\n", i)
	}
	return b.String()
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func runOK(t *testing.T, cwd string, args ...string) string {
	t.Helper()
	res := Run(t, cwd, 2*time.Minute, append(append([]string{"run"}, args...), "--progress", "never")...)
	if res.Code != 0 {
		t.Fatalf("kisflow run %v: exit %d\n%s%s", args, res.Code, res.Stdout, res.Stderr)
	}
	return res.Stdout
}

func wantLines(t *testing.T, out string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(out, l) {
			t.Fatalf("output lacks %q:\n%s", l, out)
		}
	}
}

// Two config folders with a flow of the same name, run one after the
// other from the same folder, each read all their rows: with the default
// state (each folder's own .kisflow) and with one --state for both (the
// positions are keyed by the source: its file's folder (device and inode)
// and name, or for a generator its folder and name). A second run of each
// says it has nothing new.
func TestSameFlowNameInTwoFoldersKeepsSeparatePositions(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		source func(n int) string
		files  func(n int) map[string]string
		state  bool // one --state for both folders
	}{
		{"file, default state", func(int) string { return fileSource }, func(n int) map[string]string { return map[string]string{"ids.jsonl": idLines(1, n)} }, false},
		{"file, one --state", func(int) string { return fileSource }, func(n int) map[string]string { return map[string]string{"ids.jsonl": idLines(1, n)} }, true},
		{"generator, default state", generatorSource, func(int) map[string]string { return nil }, false},
		{"generator, one --state", generatorSource, func(int) map[string]string { return nil }, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			counts := map[string]int{"a": 120, "b": 230}
			files := map[string]string{}
			for name, n := range counts {
				files = merge(files, idsConfig(name, c.source(n), "at-least-once"))
				for f, data := range c.files(n) {
					files[name+"/"+f] = data
				}
			}
			root := Dir(t, files)
			var extra []string
			if c.state {
				extra = []string{"--state", filepath.Join(root, "shared-state")}
			}
			for _, name := range []string{"a", "b"} {
				out := runOK(t, root, append([]string{name}, extra...)...)
				wantLines(t, out, "flow Ids: no position: reading from the start",
					fmt.Sprintf("flow Ids: %d rows read, %d committed, %d written, 0 dead-lettered", counts[name], counts[name], counts[name]))
				if bad := Check(SQLiteCounts(t, filepath.Join(root, name, "out.db"), "SELECT id FROM out"), counts[name], true); len(bad) > 0 {
					t.Fatalf("folder %s: %v", name, bad)
				}
			}
			if _, err := os.Stat(filepath.Join(root, ".kisflow")); err == nil {
				t.Fatal("state was kept in the current folder")
			}
			if !c.state {
				for _, name := range []string{"a", "b"} {
					if _, err := os.Stat(filepath.Join(root, name, ".kisflow", "checkpoints.db")); err != nil {
						t.Fatalf("no state in the config folder %s: %v", name, err)
					}
				}
			}
			for _, name := range []string{"a", "b"} {
				out := runOK(t, root, append([]string{name}, extra...)...)
				if strings.Contains(out, "rows read") {
					t.Fatalf("second run of %s prints a bare count:\n%s", name, out)
				}
				pos := regexp.MustCompile(`(?m)^flow Ids: resuming at position (\S+) \(committed at \S+\)$`).FindStringSubmatch(out)
				if pos == nil {
					t.Fatalf("second run of %s does not say where it resumes:\n%s", name, out)
				}
				wantLines(t, out, "flow Ids: nothing new in ids since position "+pos[1])
			}
		})
	}
}

// A position that an earlier version kept under the flow name alone is
// picked up once and moved to the flow's new key: an upgrade does not
// replay what was committed. At-least-once the position is in the
// checkpoint store (given by --state, or, by default, the one an earlier
// version kept in the current folder, .kisflow/checkpoints.db); exactly-
// once it is in the sink's database. Another folder with a flow of the
// same name, run afterwards from the same folder, does not take it.
func TestPositionOfAnEarlierVersionIsPickedUpOnce(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, delivery string
		cwdStore       bool // the store of an earlier default: CWD/.kisflow
	}{
		{"checkpoint store", "at-least-once", false},
		{"exactly-once sink", "exactly-once", false},
		{"store in the current folder", "at-least-once", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			root := Dir(t, merge(idsConfig("c", fileSource, c.delivery), map[string]string{"c/ids.jsonl": idLines(1, 100)},
				idsConfig("d", fileSource, c.delivery), map[string]string{"d/ids.jsonl": idLines(1, 80)}))
			conf := filepath.Join(root, "c")
			state := []string{"--state", filepath.Join(root, "state")}
			store := filepath.Join(root, "state", "checkpoints.db")
			switch {
			case c.delivery == "exactly-once":
				store = filepath.Join(conf, "out.db")
			case c.cwdStore:
				state = []string{"--state", filepath.Join(root, ".kisflow")} // where an earlier version kept it
				store = filepath.Join(root, ".kisflow", "checkpoints.db")
			}
			runOK(t, root, append([]string{"c"}, state...)...)
			// What an earlier version left: the position under "Ids".
			db, err := sql.Open("sqlite", store)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			res, err := db.Exec("UPDATE kisflow_checkpoints SET stream = 'Ids'")
			if n, _ := res.RowsAffected(); err != nil || n != 1 {
				t.Fatalf("make the old key: %d rows, %v", n, err)
			}
			if c.delivery == "exactly-once" { // and the dead-letter journal's
				if _, err := db.Exec("UPDATE kisflow_inbox SET stream = 'Ids'"); err != nil {
					t.Fatal(err)
				}
			}
			f, err := os.OpenFile(filepath.Join(conf, "ids.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteString(idLines(101, 150)); err != nil {
				t.Fatal(err)
			}
			f.Close()

			if c.cwdStore {
				state = nil // the new default: c/.kisflow
			}
			out := runOK(t, root, append([]string{"c"}, state...)...)
			if c.cwdStore {
				wantLines(t, out, "flow Ids: position ", " taken over from "+filepath.Join(".kisflow", "checkpoints.db")+", where an earlier version kept it")
			}
			wantLines(t, out, "flow Ids: position kept under the flow name by an earlier version, now under Ids@file:dir="+folderIdentity(t, conf)+"/ids.jsonl",
				"flow Ids: resuming at position ", "flow Ids: 50 rows read")
			if bad := Check(SQLiteCounts(t, filepath.Join(conf, "out.db"), "SELECT id FROM out"), 150, true); len(bad) > 0 {
				t.Fatalf("sink after the upgrade: %v", bad)
			}
			var old int
			if err := db.QueryRow("SELECT count(*) FROM kisflow_checkpoints WHERE stream = 'Ids'").Scan(&old); err != nil || old != 0 {
				t.Fatalf("the old key is still there (%d, %v)", old, err)
			}
			// Once: the next run resumes under the new key, quietly.
			out = runOK(t, root, append([]string{"c"}, state...)...)
			if strings.Contains(out, "earlier version") {
				t.Fatalf("moved twice:\n%s", out)
			}
			wantLines(t, out, "flow Ids: nothing new in ids since position ")
			// Another folder's flow Ids, run from the same folder, reads
			// its own rows from the start.
			out = runOK(t, root, append([]string{"d"}, state...)...)
			wantLines(t, out, "flow Ids: no position: reading from the start", "flow Ids: 80 rows read")
		})
	}
}

// folderIdentity is DEV:INODE of the folder dir, as a file source's state
// key names the folder of its file.
func folderIdentity(t *testing.T, dir string) string {
	t.Helper()
	info, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := info.Sys().(*syscall.Stat_t)
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// Two folders whose flows of the same name read the same file
// (../shared.jsonl) share its position when it is kept in one place: one
// --state for both (at-least-once), or one exactly-once sink
// (../out.db). The second folder's run then has nothing new; with each
// folder's own state, both read every row.
func TestTheSameFileSharesItsPositionInOneStore(t *testing.T) {
	t.Parallel()
	shared := `kistype: conn
cname: ids
type: file
params:
  path: ../shared.jsonl`
	for _, c := range []struct {
		name, delivery string
		state          bool // one --state for both
		sink           string
		shared         bool
	}{
		{"one --state", "at-least-once", true, "out.db", true},
		{"one exactly-once sink", "exactly-once", false, "../out.db", true},
		{"each folder's own state", "at-least-once", false, "out.db", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			files := map[string]string{"shared.jsonl": idLines(1, 300)}
			for _, name := range []string{"a", "b"} {
				for f, data := range idsConfig(name, shared, c.delivery) {
					files[f] = strings.Replace(data, "path: out.db", "path: "+c.sink, 1)
				}
			}
			root := Dir(t, files)
			var extra []string
			if c.state {
				extra = []string{"--state", filepath.Join(root, "state")}
			}
			wantLines(t, runOK(t, root, append([]string{"a"}, extra...)...), "flow Ids: 300 rows read")
			out := runOK(t, root, append([]string{"b"}, extra...)...)
			if c.shared {
				wantLines(t, out, "flow Ids: resuming at position ", "flow Ids: nothing new in ids since position ")
			} else {
				wantLines(t, out, "flow Ids: no position: reading from the start", "flow Ids: 300 rows read")
			}
		})
	}
}
