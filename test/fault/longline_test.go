package fault

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// longText is the text field of long row id: about n bytes that vary
// along their length, so that a piece in the wrong place shows.
func longText(id, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "row %d:", id)
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, " %08d", i)
	}
	return b.String()
}

// longRows is rows from..from+8: three groups of a short row, a long one
// (300 KiB, 1 MiB, 5 MiB; the file source's read buffer is 256 KiB) and
// a short one, as JSON lines; text holds each long row's text by id.
func longRows(from int, text map[int]string) string {
	var b strings.Builder
	id := from
	for _, n := range []int{300 << 10, 1 << 20, 5 << 20} {
		fmt.Fprintf(&b, "{\"id\":%d,\"qty\":1}\n", id)
		text[id+1] = longText(id+1, n)
		fmt.Fprintf(&b, "{\"id\":%d,\"user\":%d,\"text\":%q}\n", id+1, id+1, text[id+1])
		fmt.Fprintf(&b, "{\"id\":%d,\"user\":%d,\"qty\":2}\n", id+2, id+2)
		id += 3
	}
	return b.String()
}

// longConfig is a flow file source -> calc -> JSON lines file sink.
func longConfig(source string) map[string]string {
	return map[string]string{
		"flow.yml": `kistype: flow
status: 1
flow_name: Long
flows:
  - fname: Twice
stream:
  source: in
  sink: out
  delivery: at-least-once
  batch_size: 4
---
kistype: func
fname: Twice
fmode: Calculate
calc:
  twice: id * 2
`,
		"conns.yml": source + `
---
kistype: conn
cname: out
type: file
params:
  path: out.jsonl
`,
	}
}

// deadLetters is the dead-letter file of the flow in dir.
func deadLetters(dir string) string {
	return filepath.Join(dir, ".kisflow", "dead-letter", "Long.jsonl")
}

const longSource = `kistype: conn
cname: in
type: file
params:
  path: in.jsonl`

// checkLongRows checks that the sink holds rows 1..n once each, each
// long one with its text intact, and that nothing was dead-lettered.
func checkLongRows(t *testing.T, dir string, n int, text map[int]string) {
	t.Helper()
	rows := JSONLines(t, filepath.Join(dir, "out.jsonl"))
	counts := map[int64]int{}
	for _, r := range rows {
		id, _ := r["id"].(float64)
		counts[int64(id)]++
		if r["twice"] != 2*id {
			t.Errorf("row %v: twice %v", id, r["twice"])
		}
		want, long := text[int(id)]
		got, _ := r["text"].(string)
		if long && got != want {
			pre := 0
			for pre < len(got) && pre < len(want) && got[pre] == want[pre] {
				pre++
			}
			t.Errorf("row %v: text of %d bytes, want %d, differing from byte %d", id, len(got), len(want), pre)
		}
		if !long && r["text"] != nil {
			t.Errorf("row %v: a short row has text", id)
		}
	}
	if bad := Check(counts, n, true); len(bad) > 0 {
		t.Fatalf("sink: %v", bad)
	}
	if dl := JSONLines(t, deadLetters(dir)); len(dl) > 0 {
		t.Fatalf("%d rows dead-lettered, the first: %.300v", len(dl), dl[0])
	}
}

// A JSON line of 300 KiB, 1 MiB or 5 MiB between short ones reaches the
// sink intact, and so does the line after it; a second run resumes after
// them (also when the run ended on a long line), reading only the rows
// appended since. Before, a line longer than
// the file source's 256 KiB buffer lost its start, had bytes of the
// following lines spliced in and was dead-lettered as a JSON string.
func TestLongLinesArriveIntact(t *testing.T) {
	t.Parallel()
	text := map[int]string{}
	dir := Dir(t, merge(longConfig(longSource), map[string]string{"in.jsonl": longRows(1, text)}))
	run := func(want int) {
		t.Helper()
		res := Run(t, dir, 3*time.Minute, "run", dir, "--progress", "never")
		out := res.Stdout + res.Stderr
		if res.Code != 0 {
			t.Fatalf("exit %d\n%s", res.Code, tail(out, 4000))
		}
		if !strings.Contains(out, fmt.Sprintf(" %d rows read", want)) || !strings.Contains(out, ", 0 dead-lettered") {
			t.Fatalf("the summary does not say %d rows read and none dead-lettered:\n%s", want, tail(out, 4000))
		}
	}
	run(9)
	checkLongRows(t, dir, 9, text)
	// A run that ends on a long line: the next one resumes right after it.
	text[10] = longText(10, 1<<20)
	appendTo(t, filepath.Join(dir, "in.jsonl"), fmt.Sprintf("{\"id\":10,\"text\":%q}\n", text[10]))
	run(1)
	checkLongRows(t, dir, 10, text)
	appendTo(t, filepath.Join(dir, "in.jsonl"), longRows(11, text))
	run(9)
	checkLongRows(t, dir, 19, text)
}

// The same in follow mode: long lines appended in pieces that end
// mid-line while the job runs arrive intact, the job stopped by SIGTERM
// and started again resumes after them, and lines appended then arrive
// once each.
func TestFollowedLongLinesArriveIntact(t *testing.T) {
	t.Parallel()
	text := map[int]string{}
	dir := Dir(t, merge(longConfig(longSource+"\n  follow: \"true\"\n  poll: 20ms"), map[string]string{"in.jsonl": ""}))
	in := filepath.Join(dir, "in.jsonl")
	rows := func() int { // written or dead-lettered: whole lines (the job may be writing one)
		n := 0
		for _, p := range []string{filepath.Join(dir, "out.jsonl"), deadLetters(dir)} {
			data, _ := os.ReadFile(p)
			n += bytes.Count(data, []byte("\n"))
		}
		return n
	}
	feed := func(data string) {
		for len(data) > 0 {
			n := min(len(data), 200<<10+13)
			appendTo(t, in, data[:n])
			data = data[n:]
			time.Sleep(5 * time.Millisecond)
		}
	}
	stop := func(p *Proc) {
		t.Helper()
		p.Signal(syscall.SIGTERM)
		if code := p.Wait(2 * time.Minute); code != 0 {
			t.Fatalf("exit %d after SIGTERM\n%s", code, tail(p.Output(), 4000))
		}
	}
	p := Start(t, dir, nil, "run", dir, "--progress", "never")
	feed(longRows(1, text))
	Eventually(t, 2*time.Minute, "9 rows in the sink", func() bool { return rows() >= 9 })
	stop(p)
	checkLongRows(t, dir, 9, text)

	p = Start(t, dir, nil, "run", dir, "--progress", "never")
	p.WaitFor("flow Long: resuming at position ", 2*time.Minute)
	feed(longRows(10, text))
	Eventually(t, 2*time.Minute, "18 rows in the sink", func() bool { return rows() >= 18 })
	stop(p)
	checkLongRows(t, dir, 18, text)
}
