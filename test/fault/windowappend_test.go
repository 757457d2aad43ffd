package fault

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestWindowsAfterACompletedRunOfAnAppendedFile: a bounded run closes
// every window; the file is appended to and the job run again (three
// workers, the stream's event time). A row of a window the first run
// emitted is late; rows of later windows are counted, not dead-lettered
// as late (the flushed windows' watermark was kept at the end of time).
func TestWindowsAfterACompletedRunOfAnAppendedFile(t *testing.T) {
	t.Parallel()
	const base = 1777636800000 // 2026-05-01T12:00:00Z
	line := func(sec int) string { return fmt.Sprintf(`{"ts":%d,"user_id":1}`+"\n", base+int64(sec)*1000) }
	dir := Dir(t, map[string]string{
		"in.jsonl": line(0) + line(70) + line(130),
		"flow.yml": `kistype: flow
status: 1
flow_name: S
flows:
  - fname: W
stream:
  source: src
  sink: out
  batch_size: 1
  time_field: ts
  lateness: 1s
  workers: 3
  key: user_id
`,
		"funcs.yml": `kistype: func
fname: W
fmode: Calculate
window: {type: tumbling, size: 1m, time_field: ts, group_by: [user_id], aggregate: {n: count()}}
`,
		"conns.yml": `kistype: conn
cname: src
type: file
params:
  path: in.jsonl
---
kistype: conn
cname: out
type: file
params:
  path: out.jsonl
`,
	})
	run := func() {
		if r := Run(t, dir, 60*time.Second, "run", dir, "--progress", "never"); r.Code != 0 {
			t.Fatalf("run: exit %d\n%s", r.Code, r.Stderr)
		}
	}
	run()
	f, err := os.OpenFile(filepath.Join(dir, "in.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(line(150) + line(300) + line(400)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	run()
	var got []string
	for _, r := range JSONLines(t, filepath.Join(dir, "out.jsonl")) {
		got = append(got, fmt.Sprintf("%v %v", r["window_start"], r["n"]))
	}
	want := []string{"2026-05-01T12:00:00Z 1", "2026-05-01T12:01:00Z 1", "2026-05-01T12:02:00Z 1",
		"2026-05-01T12:05:00Z 1", "2026-05-01T12:06:00Z 1"}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("windows:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	dead := JSONLines(t, filepath.Join(dir, ".kisflow", "dead-letter", "S.jsonl"))
	if len(dead) != 1 || !strings.Contains(fmt.Sprint(dead[0]["error"]), "late row") {
		t.Errorf("dead letters %v, want the row at 12:02:30 late", dead)
	}
}
