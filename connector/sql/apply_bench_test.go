package sql

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/driver"
)

// cpuTime is the process's CPU time so far (user and system).
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cdcStream is the changes of BenchmarkPostgresCDCVersusRawStream (root
// package) as postgres_cdc makes them: 60,000 inserts, 30,000 updates of
// every other hundred, 10,000 deletes, in that order.
func cdcStream() []any {
	at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	row := func(op string, id int64, v string, n int64) any {
		return map[string]any{"_op": op, "_table": "public.src", "_lsn": "0/16B3748", "id": id, "v": v, "n": n, "at": at}
	}
	var out []any
	for id := int64(1); id <= 60_000; id++ {
		out = append(out, row("insert", id, fmt.Sprintf("row %d", id), id))
	}
	for t := range int64(300) {
		for id := t*200 + 1; id <= t*200+100; id++ {
			out = append(out, row("update", id, "updated", id+1))
		}
	}
	for t := range int64(100) {
		for id := t*600 + 101; id <= t*600+200; id++ {
			out = append(out, row("delete", id, "", 0))
		}
	}
	return out
}

// BenchmarkApplyChanges applies the CDC benchmark's 100,000 changes with
// mode apply in batches of 1,000 (the runtime's default) and of 5,000 (a
// CDC source's, driver.ChangeBatchSize), as the runtime hands them to the sink:
// with Write (at-least-once) and with CommitBatchAfter (exactly-once: the
// position in the same transaction), into a table with a primary key.
// It measures the sink alone, without the source: rows/s, and the
// process's CPU time per row (the database server's not counted), which
// the machine's load and the disk's flushes move less:
//
//	go test ./connector/sql -run '^$' -bench BenchmarkApplyChanges -benchtime 2x
func BenchmarkApplyChanges(b *testing.B) {
	changes := cdcStream()
	for _, typ := range dialects {
		for _, eo := range []bool{false, true} {
			for _, size := range []int{1000, driver.ChangeBatchSize} {
				name := fmt.Sprintf("%s/batch-%d", typ, size)
				if eo {
					name = fmt.Sprintf("%s-exactly-once/batch-%d", typ, size)
				}
				b.Run(name, func(b *testing.B) {
					d := openDBWith(b, typ, "replica", newDatabase(b, typ), map[string]string{"mode": "apply", "upsert_key": "id"})
					var took, cpu time.Duration
					pos := ""
					for i := range b.N {
						b.StopTimer()
						if _, err := d.SQL().Exec("DROP TABLE IF EXISTS replica"); err != nil {
							b.Fatal(err)
						}
						if _, err := d.SQL().Exec("CREATE TABLE replica (id BIGINT PRIMARY KEY, v TEXT, n BIGINT, at TIMESTAMP)"); err != nil {
							b.Fatal(err)
						}
						b.StartTimer()
						start, cpu0 := time.Now(), cpuTime(b)
						pos = applyChanges(b, d, changes, size, eo, fmt.Sprint(i), pos)
						took += time.Since(start)
						cpu += cpuTime(b) - cpu0
					}
					checkReplica(b, d)
					reportApply(b, len(changes)*b.N, took, cpu)
				})
			}
		}
	}
}

// BenchmarkApplyChangesCreated is BenchmarkApplyChanges into SQLite at
// the CDC sources' batch size, into a table the sink creates (params
// create, as the CDC benchmark's replica): its integer key is then the
// table's rowid (see rowidKey).
//
//	go test ./connector/sql -run '^$' -bench BenchmarkApplyChangesCreated -benchtime 5x
func BenchmarkApplyChangesCreated(b *testing.B) {
	changes := cdcStream()
	for _, eo := range []bool{false, true} {
		name := "sqlite"
		if eo {
			name = "sqlite-exactly-once"
		}
		b.Run(name, func(b *testing.B) {
			var took, cpu time.Duration
			for range b.N {
				b.StopTimer()
				d := openDBWith(b, TypeSQLite, "replica", newDatabase(b, TypeSQLite), map[string]string{"mode": "apply", "upsert_key": "id", "create": "true"})
				b.StartTimer()
				start, cpu0 := time.Now(), cpuTime(b)
				applyChanges(b, d, changes, driver.ChangeBatchSize, eo, "", "")
				took += time.Since(start)
				cpu += cpuTime(b) - cpu0
				checkReplica(b, d)
			}
			reportApply(b, len(changes)*b.N, took, cpu)
		})
	}
}

// applyChanges applies changes to d in batches of size, as the runtime
// would: with Write, or (eo) with CommitBatchAfter from the position pos,
// each batch's position named after run. It returns the last position.
func applyChanges(b *testing.B, d *DB, changes []any, size int, eo bool, run, pos string) string {
	ctx := context.Background()
	for j := 0; j < len(changes); j += size {
		batch := changes[j:min(j+size, len(changes))]
		var err error
		if eo {
			next := fmt.Sprintf("%s/%d", run, j)
			err = d.CommitBatchAfter(ctx, "bench", pos, next, nil, batch)
			pos = next
		} else {
			err = d.Write(ctx, batch)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	return pos
}

// checkReplica fails unless the replica holds the 50,000 rows the
// changes leave.
func checkReplica(b *testing.B, d *DB) {
	var left int
	if err := d.SQL().QueryRow("SELECT count(*) FROM replica").Scan(&left); err != nil || left != 50_000 {
		b.Fatalf("the replica holds %d rows (err %v), want 50000", left, err)
	}
}

// reportApply reports rows/s and the CPU time per row of n changes
// applied in took (wall) and cpu.
func reportApply(b *testing.B, n int, took, cpu time.Duration) {
	b.ReportMetric(float64(n)/took.Seconds(), "rows/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(n), "cpu-µs/row")
}
