package fault

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/internal/testenv"
)

// usage is the size of the files in dir (an SQLite database grows its
// journal or write-ahead log first).
func usage(t *testing.T, dir string) int64 {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range entries {
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n
}

var writtenRE = regexp.MustCompile(`(\d+) written`)

// TestDiskFull runs a job whose sink (an SQLite database or a JSON lines
// file) lives on a 2 MB tmpfs, with twice as much output as fits. The job
// must either wait for space or fail with a non-zero exit and an error
// that says the disk is full and names the file; it must never report
// more rows written than the sink holds. After the disk grows (and, if the
// job failed, a rerun), every id is in the sink: exactly once for the
// exactly-once delivery, at least once otherwise.
func TestDiskFull(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, delivery, sinkType, file string
	}{
		{"sqlite-exactly-once", "exactly-once", "sqlite", "out.db"},
		{"sqlite-at-least-once", "at-least-once", "sqlite", "out.db"},
		{"file-at-least-once", "at-least-once", "file", "out.jsonl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if testing.Short() && tc.name != "sqlite-exactly-once" {
				t.Skip("-short: sqlite exactly-once only")
			}
			t.Parallel()
			disk := testenv.SmallDisk(t, "2m")
			const n = 20000 // about 4.5 MB of output
			pad := strings.Repeat("x", 200)
			work := t.TempDir()
			input := filepath.Join(work, "ids.jsonl")
			if err := os.WriteFile(input, []byte(IDLines(n, func(i int) string { return fmt.Sprintf(`{"id":%d,"pad":%q}`, i, pad) })), 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(disk, tc.file)
			sink := fmt.Sprintf("kistype: conn\ncname: out\ntype: sqlite\nkey: out\nparams:\n  path: %s\n  create: \"true\"\n  columns: id,pad\n", out)
			ids := func() map[int64]int { return SQLiteCounts(t, out, "SELECT id FROM out") }
			if tc.sinkType == "file" {
				sink = fmt.Sprintf("kistype: conn\ncname: out\ntype: file\nparams:\n  path: %s\n", out)
				ids = func() map[int64]int {
					counts := map[int64]int{}
					for _, row := range JSONLines(t, out) {
						id, _ := row["id"].(float64)
						counts[int64(id)]++
					}
					return counts
				}
			}
			dir := Dir(t, map[string]string{
				"flow.yml":  "kistype: flow\nstatus: 1\nflow_name: Ids\nflows:\n  - fname: Keep\nstream:\n  source: in\n  sink: out\n  delivery: " + tc.delivery + "\n  batch_size: 200\n",
				"funcs.yml": "kistype: func\nfname: Keep\nfmode: Calculate\ncalc:\n  seen: true\nkeep: [id, pad]\n",
				"conns.yml": fmt.Sprintf("kistype: conn\ncname: in\ntype: file\nparams:\n  path: %s\n---\n", input) + sink,
			})
			args := []string{"run", dir, "--state", filepath.Join(work, "state"), "--progress", "never"}
			p := Start(t, dir, nil, args...)

			// The job either ends (it must fail) or stops making
			// progress while it waits for space.
			size, since := int64(-1), time.Now()
			for !p.Exited() && time.Since(since) < 15*time.Second {
				if used := usage(t, disk); used != size {
					size, since = used, time.Now()
				}
				time.Sleep(100 * time.Millisecond)
			}
			failed := p.Exited()
			if failed {
				code := exitCode(p.err)
				msg := p.Output()
				if code == 0 {
					t.Fatalf("kisflow run exited 0 with a full disk; output:\n%s", tail(msg, 4000))
				}
				low := strings.ToLower(msg)
				if !strings.Contains(low, "no space left") && !strings.Contains(low, "disk is full") {
					t.Errorf("the error does not say the disk is full:\n%s", tail(msg, 4000))
				}
				if !strings.Contains(msg, tc.file) {
					t.Errorf("the error does not name the file %s:\n%s", tc.file, tail(msg, 4000))
				}
				stored := len(ids())
				if m := writtenRE.FindStringSubmatch(msg); m != nil {
					if w, _ := strconv.Atoi(m[1]); w > stored {
						t.Errorf("the summary says %d written; the sink holds %d ids", w, stored)
					}
				}
				t.Logf("exit %d with %d of %d ids stored", code, stored, n)
			} else {
				t.Logf("waiting for space after %d bytes", size)
			}

			testenv.GrowDisk(t, disk, "64m")
			if failed {
				p = Start(t, dir, nil, args...)
			}
			if code := p.Wait(time.Minute); code != 0 {
				t.Fatalf("with room on the disk, kisflow run exited %d; output:\n%s", code, tail(p.Output(), 4000))
			}
			if bad := Check(ids(), n, tc.delivery == "exactly-once"); len(bad) > 0 {
				t.Fatalf("%s after the disk was full: %v", tc.delivery, bad)
			}
		})
	}
}
