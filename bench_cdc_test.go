package kisflow_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/connector/file"
	"github.com/kisflow-go/kisflow/connector/pgcdc"
	kissql "github.com/kisflow-go/kisflow/connector/sql"
	"github.com/kisflow-go/kisflow/internal/testenv"
)

// cdcChanges is how many changes the CDC benchmark replicates: 60,000
// inserts (600 transactions), 30,000 updates and 10,000 deletes.
const cdcChanges = 100_000

// BenchmarkPostgresCDCVersusRawStream replicates 100,000 changes of a
// private PostgreSQL (wal_level=logical) through postgres_cdc and mode
// apply into SQLite (at-least-once and exactly-once) and into a
// PostgreSQL table, and into the discard sink (the source's own cost), against the same stream read and decoded by pgx and
// pglogrepl alone (each change's columns decoded to Go values, nothing
// written). Each reader has its own slot, created before the changes. The
// raw stream is read again right before each target (the server's speed
// varies on a loaded machine), and each ratio is to the raw read just
// before it. Beside the wall time, each reader's CPU time is measured:
// this process's and the server's (every process of the private
// server); the cpu-ratio, the raw read's CPU over the target's, is what
// the work costs whatever else the machine runs.
func BenchmarkPostgresCDCVersusRawStream(b *testing.B) {
	batch := "" // the flow's stream.batch_size: the source type's default unless KISFLOW_BENCH_BATCH
	if v := os.Getenv("KISFLOW_BENCH_BATCH"); v != "" {
		if n, err := strconv.Atoi(v); err != nil || n <= 0 {
			b.Fatalf("KISFLOW_BENCH_BATCH=%q: want a positive batch size", v)
		}
		batch = "  batch_size: " + v + "\n"
	}
	srv := testenv.PrivatePostgres(b, "wal_level=logical", "max_replication_slots=10", "max_wal_senders=10", "autovacuum=off")
	url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", srv.Port())
	db, err := sql.Open("pgx", url)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	exec := func(q string) {
		if _, err := db.Exec(q); err != nil {
			b.Fatalf("%s: %v", q, err)
		}
	}
	targets := []struct{ name, delivery, sink string }{
		{"discard", "at-least-once", "type: discard\n"},
		{"sqlite", "at-least-once", "type: sqlite\nkey: replica\nparams:\n  path: " + filepath.Join(b.TempDir(), "replica.db") + "\n  mode: apply\n  upsert_key: id\n  create: \"true\"\n"},
		{"sqlite-exactly-once", "exactly-once", "type: sqlite\nkey: replica\nparams:\n  path: " + filepath.Join(b.TempDir(), "replica-eo.db") + "\n  mode: apply\n  upsert_key: id\n  create: \"true\"\n"},
		{"postgres", "at-least-once", "type: postgres\nkey: replica\nparams:\n  dsn: \"" + url + "\"\n  mode: apply\n"},
	}
	if only := os.Getenv("KISFLOW_BENCH_TARGETS"); only != "" { // a comma-separated list of names, to profile one
		targets = slices.DeleteFunc(targets, func(t struct{ name, delivery, sink string }) bool {
			return !slices.Contains(strings.Split(only, ","), t.name)
		})
	}
	// Each target's times, added up over the iterations (-benchtime Nx):
	// the figures are ratios of sums, N pairs of reads alternated.
	type sums struct {
		raw, job       time.Duration
		rawCPU, jobCPU cpuTimes
	}
	total := make([]sums, len(targets))
	for i := range b.N {
		exec("DROP TABLE IF EXISTS src, replica")
		exec("CREATE TABLE src (id BIGINT PRIMARY KEY, v TEXT, n BIGINT, at TIMESTAMPTZ)")
		exec("CREATE TABLE replica (id BIGINT PRIMARY KEY, v TEXT, n BIGINT, at TIMESTAMPTZ)")
		exec("DROP PUBLICATION IF EXISTS bench; CREATE PUBLICATION bench FOR TABLE src")
		slot := func(name string) string { return fmt.Sprintf("%s_%d", name, i) }
		for _, s := range []string{"discard", "sqlite", "sqlite_exactly_once", "postgres"} {
			exec(fmt.Sprintf("SELECT pg_create_logical_replication_slot('%s', 'pgoutput')", slot(s)))
			exec(fmt.Sprintf("SELECT pg_create_logical_replication_slot('%s', 'pgoutput')", slot("raw_"+s)))
		}
		for t := range 600 {
			exec(fmt.Sprintf("INSERT INTO src SELECT g, 'row ' || g, g, now() FROM generate_series(%d, %d) g", t*100+1, t*100+100))
		}
		for t := range 300 {
			exec(fmt.Sprintf("UPDATE src SET n = n + 1, v = 'updated' WHERE id BETWEEN %d AND %d", t*200+1, t*200+100))
		}
		for t := range 100 {
			exec(fmt.Sprintf("DELETE FROM src WHERE id BETWEEN %d AND %d", t*600+101, t*600+200))
		}

		for t, tg := range targets {
			cpu0 := cpuNow(srv)
			raw := rawReplication(b, url, slot("raw_"+strings.ReplaceAll(tg.name, "-", "_")), cdcChanges)
			cpu1 := cpuNow(srv)
			reg := kisflow.NewRegistry()
			if err := pgcdc.Install(reg); err != nil {
				b.Fatal(err)
			}
			if err := kissql.Install(reg); err != nil {
				b.Fatal(err)
			}
			if err := file.Install(reg); err != nil { // discard
				b.Fatal(err)
			}
			docs := map[string]string{
				"flow.yml": "kistype: flow\nstatus: 1\nflow_name: Bench\nflows:\n  - fname: Pass\nstream:\n  source: in\n  sink: out\n" + batch + "  linger: 5ms\n  delivery: " + tg.delivery + "\n",
				"func.yml": "kistype: func\nfname: Pass\nfmode: Calculate\ncalc:\n  seen: true\n",
				"conns.yml": fmt.Sprintf("kistype: conn\ncname: in\ntype: postgres_cdc\naddrs: \"%s\"\nkey: src\nparams:\n  slot: %s\n  publication: bench\n  snapshot: \"false\"\n  create_slot: \"false\"\n---\nkistype: conn\ncname: out\n%s",
					url, slot(tg.name), tg.sink),
			}
			if tg.name == "sqlite-exactly-once" {
				docs["conns.yml"] = fmt.Sprintf("kistype: conn\ncname: in\ntype: postgres_cdc\naddrs: \"%s\"\nkey: src\nparams:\n  slot: %s\n  publication: bench\n  snapshot: \"false\"\n  create_slot: \"false\"\n---\nkistype: conn\ncname: out\n%s",
					url, slot("sqlite_exactly_once"), tg.sink)
			}
			job := runJobUntil(b, reg, docs, cdcChanges)
			cpu2 := cpuNow(srv)
			rawCPU, jobCPU := cpu1.sub(cpu0), cpu2.sub(cpu1)
			s := &total[t]
			s.raw, s.job = s.raw+raw, s.job+job
			s.rawCPU, s.jobCPU = s.rawCPU.add(rawCPU), s.jobCPU.add(jobCPU)
		}
		var left int
		if err := db.QueryRow("SELECT count(*) FROM replica").Scan(&left); err != nil || (left != 50_000 && slices.ContainsFunc(targets, func(t struct{ name, delivery, sink string }) bool { return t.name == "postgres" })) {
			b.Fatalf("the PostgreSQL replica holds %d rows (err %v), want 50000", left, err)
		}
		// Drop the iteration's slots once their readers have left.
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			_, err := db.Exec("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active")
			var n int
			if err == nil {
				err = db.QueryRow("SELECT count(*) FROM pg_replication_slots").Scan(&n)
			}
			if err == nil && n == 0 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("the slots are still there (%d, err %v)", n, err)
			}
		}
	}
	n := float64(b.N)
	var raws time.Duration
	for t, tg := range targets {
		s := total[t]
		raws += s.raw
		b.ReportMetric(n*cdcChanges/s.job.Seconds(), tg.name+"-rows/s")
		b.ReportMetric(s.raw.Seconds()/s.job.Seconds(), tg.name+"-ratio")
		b.ReportMetric(s.rawCPU.total().Seconds()/s.jobCPU.total().Seconds(), tg.name+"-cpu-ratio")
		b.ReportMetric(float64(s.jobCPU.self.Milliseconds())/n, tg.name+"-cpu-ms")
		b.ReportMetric(float64(s.jobCPU.server.Milliseconds())/n, tg.name+"-server-cpu-ms")
		b.ReportMetric(float64(s.rawCPU.self.Milliseconds())/n, tg.name+"-raw-cpu-ms")
		b.ReportMetric(float64(s.rawCPU.server.Milliseconds())/n, tg.name+"-raw-server-cpu-ms")
	}
	b.ReportMetric(n*cdcChanges*float64(len(targets))/raws.Seconds(), "raw-rows/s")
}

// cpuTimes is the CPU time used so far by this process and by a server;
// selfEnd is this process's once it had read the server's (reading /proc
// takes some), where the next step starts.
type cpuTimes struct{ self, server, selfEnd time.Duration }

// cpuNow collects this process's garbage and lets the server's processes
// of the step before end, so that neither's cost falls into the next
// step, and returns the CPU times used so far.
func cpuNow(srv *testenv.Server) cpuTimes {
	runtime.GC()
	time.Sleep(200 * time.Millisecond)
	self := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	c := cpuTimes{self: self()}
	c.server = srv.CPUTime()
	c.selfEnd = self()
	return c
}

// sub is the CPU time of the step from o to c.
func (c cpuTimes) sub(o cpuTimes) cpuTimes {
	return cpuTimes{self: c.self - o.selfEnd, server: c.server - o.server}
}

func (c cpuTimes) add(o cpuTimes) cpuTimes {
	return cpuTimes{self: c.self + o.self, server: c.server + o.server}
}

func (c cpuTimes) total() time.Duration { return c.self + c.server }

// rawReplication reads n changes from slot with pgx's replication
// protocol and pglogrepl's decoder, decoding every column to its Go value,
// and returns how long that took.
func rawReplication(b *testing.B, url, slot string, n int) time.Duration {
	b.Helper()
	ctx := context.Background()
	start := time.Now()
	conn, err := pgconn.Connect(ctx, url+"&replication=database")
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := pglogrepl.StartReplication(ctx, conn, slot, 0, pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication, PluginArgs: []string{"proto_version '1'", "publication_names 'bench'"}}); err != nil {
		b.Fatal(err)
	}
	types := pgtype.NewMap()
	rels := map[uint32]*pglogrepl.RelationMessage{}
	decode := func(rel uint32, td *pglogrepl.TupleData) {
		r := rels[rel]
		row := make(map[string]any, len(td.Columns))
		for i, c := range td.Columns {
			if c.DataType != pglogrepl.TupleDataTypeText {
				continue
			}
			col := r.Columns[i]
			if dt, ok := types.TypeForOID(col.DataType); ok {
				v, err := dt.Codec.DecodeValue(types, col.DataType, pgtype.TextFormatCode, c.Data)
				if err != nil {
					b.Fatal(err)
				}
				row[col.Name] = v
			}
		}
	}
	for got := 0; got < n; {
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			b.Fatal(err)
		}
		cd, ok := msg.(*pgproto3.CopyData)
		if !ok || cd.Data[0] != pglogrepl.XLogDataByteID {
			continue
		}
		x, err := pglogrepl.ParseXLogData(cd.Data[1:])
		if err != nil {
			b.Fatal(err)
		}
		m, err := pglogrepl.Parse(x.WALData)
		if err != nil {
			b.Fatal(err)
		}
		switch m := m.(type) {
		case *pglogrepl.RelationMessage:
			rels[m.RelationID] = m
		case *pglogrepl.InsertMessage:
			decode(m.RelationID, m.Tuple)
			got++
		case *pglogrepl.UpdateMessage:
			decode(m.RelationID, m.NewTuple)
			got++
		case *pglogrepl.DeleteMessage:
			decode(m.RelationID, m.OldTuple)
			got++
		}
	}
	return time.Since(start)
}
