// Package bench holds the benchmarks that run the kisflow binary on large
// generated inputs: issue 13's window figure over 10M JSON events through
// `kisflow run`, the hand-written loops it is compared with, and the memory
// an open window-group takes. They are skipped unless KISFLOW_BENCH_10M=1
// is set, so that neither CI nor a casual `-bench .` pays for them:
//
//	KISFLOW_BENCH_10M=1 go test ./test/bench -run '^$' -bench . -benchtime 3x
//
// KISFLOW_BENCH_ROWS=N runs on N events instead of 10M (a quicker check;
// a multiple of 1M, whole minutes of event time).
package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// enabled reports whether the benchmarks run (KISFLOW_BENCH_10M=1).
var enabled = os.Getenv("KISFLOW_BENCH_10M") == "1"

// rows is the number of events in the input file.
var rows = 10_000_000

// tmp holds the built binary and the generated input, removed at exit.
var tmp string

// bin is the kisflow binary built for the benchmarks.
var bin string

func TestMain(m *testing.M) {
	if !enabled {
		os.Exit(m.Run())
	}
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	if s := os.Getenv("KISFLOW_BENCH_ROWS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < perMinute || n%perMinute != 0 {
			fmt.Fprintf(os.Stderr, "KISFLOW_BENCH_ROWS=%q: want a number of events that is a multiple of 1000000 (whole minutes of event time)\n", s)
			return 2
		}
		rows = n
	}
	dir, err := os.MkdirTemp("", "kisflow-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer os.RemoveAll(dir)
	tmp = dir
	bin = filepath.Join(dir, "kisflow")
	build := exec.Command("go", "build", "-o", bin, "github.com/kisflow-go/kisflow/cmd/kisflow")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building kisflow:", err)
		return 2
	}
	return m.Run()
}

// skip skips b unless the benchmarks are enabled.
func skip(b *testing.B) {
	b.Helper()
	if !enabled {
		b.Skip("set KISFLOW_BENCH_10M=1 to run (it generates a 530 MB input file)")
	}
}
