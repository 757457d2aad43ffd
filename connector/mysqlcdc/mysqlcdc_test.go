package mysqlcdc

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/internal/testenv"
	"github.com/kisflow-go/kisflow/stream"
)

func TestParamsRefused(t *testing.T) {
	t.Parallel()
	base := func(params map[string]string) *config.Conn {
		return &config.Conn{CName: "cdc", Addrs: "root@tcp(127.0.0.1:3306)/shop", Key: "orders", Params: params}
	}
	testenv.RefusesParams(t, New, base(map[string]string{"server_id": "7", "snapshots": "true"}), "snapshots", "snapshot")
	testenv.RefusesParams(t, New, base(map[string]string{}), "server_id")
	testenv.RefusesParams(t, New, base(map[string]string{"server_id": "0"}), "server_id")
	testenv.RefusesParams(t, New, base(map[string]string{"server_id": "7", "positions": "lsn"}), "positions")
	testenv.RefusesParams(t, New, base(map[string]string{"server_id": "7", "snapshot": "maybe"}), "snapshot")
	testenv.RefusesParams(t, New, &config.Conn{CName: "cdc", Addrs: "root@tcp(127.0.0.1:3306)/shop", Params: map[string]string{"server_id": "7"}}, "key")
	testenv.RefusesParams(t, New, &config.Conn{CName: "cdc", Addrs: "root@tcp(127.0.0.1:3306)/", Key: "orders", Params: map[string]string{"server_id": "7"}}, "database")
	testenv.RefusesParams(t, New, &config.Conn{CName: "cdc", Addrs: "root@tcp(127.0.0.1:3306)/shop", Key: "a.b.c", Params: map[string]string{"server_id": "7"}}, "a.b.c")
	testenv.RefusesParams(t, New, &config.Conn{CName: "cdc", Key: "t", Params: map[string]string{"server_id": "7"}}, "addrs")
	testenv.RefusesParams(t, New, &config.Conn{CName: "cdc", Addrs: "root@unix(/tmp/s)/shop", Key: "t", Params: map[string]string{"server_id": "7"}}, "TCP")
	d, err := New(base(map[string]string{"server_id": "7", "positions": "file"}))
	if err != nil {
		t.Fatal(err)
	}
	if c := d.(*CDC); !c.p.Snapshot || c.p.Positions != "file" || c.tables[0].String() != "shop.orders" {
		t.Fatalf("decoded %+v, tables %v", c.p, c.tables)
	}
	if id := d.(*CDC).Identity(); id != "127.0.0.1:3306/7" {
		t.Errorf("identity %q, want server and server_id", id)
	}
}

func TestPositions(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "gtid:", "gtid:0-1-100", "gtid:0-1-100,1-2-7+3", "snapshot:gtid:0-1-5+12",
		"file:mysql-bin.000003:1234", "file:mysql-bin.000003:4+5", "snapshot:file:mysql-bin.000001:330+2",
		"gtid:3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5+2",
		`snapshot:gtid:0-1-5+12 {"tables":["r.a"],"at":"1:330","t":0,"k":["5","a b"]}`,
		`gtid:0-1-7+3 {"tables":["r.a","r.b"],"spans":[{"at":"1:330","t":0,"k":["5"]},{"at":"1:700","t":2}],"at":"2:4"}`} {
		p, err := parsePosition(s)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if got := p.String(); s != "" && got != s {
			t.Errorf("%q reads back as %q", s, got)
		}
	}
	for _, s := range []string{"x", "lsn:0/1", "file:mysql-bin.000001", "file::4", "file:f:x", "gtid:0-1-1+y", "gtid:0-1-1+-2",
		`gtid:0-1-1 {"tables":["r.a"],"at":"0/1"}`, `gtid:0-1-1 {`} {
		if _, err := parsePosition(s); err == nil {
			t.Errorf("%q: no error", s)
		}
	}
}

func TestMariaDBGTIDSet(t *testing.T) {
	t.Parallel()
	g, err := newGTIDSet(true, "0-1-100,1-2-7")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"0-1-101", "2-1-1", "0-3-102"} { // a new server in domain 0 replaces the old one
		if err := g.update(u); err != nil {
			t.Fatal(err)
		}
	}
	if got := g.String(); got != "0-3-102,1-2-7,2-1-1" {
		t.Errorf("set %q", got)
	}
	if err := g.update("bad"); err == nil {
		t.Error("a bad GTID was taken")
	}
}

// TestPurgedPositionIsFatal resumes from positions whose binlog the server
// purged: the source stops the job (a fatal error naming the cause) rather
// than retrying for ever or starting elsewhere.
func TestPurgedPositionIsFatal(t *testing.T) {
	t.Parallel()
	srv := testenv.PrivateMariaDB(t, "--log-bin=mysql-bin", "--binlog-format=ROW", "--server-id=1")
	dsn := fmt.Sprintf("root@tcp(127.0.0.1:%d)/", srv.Port())
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{"CREATE DATABASE p", "CREATE TABLE p.t (id INT PRIMARY KEY)", "INSERT INTO p.t VALUES (1)",
		"FLUSH BINARY LOGS", "INSERT INTO p.t VALUES (2)", "FLUSH BINARY LOGS", "PURGE BINARY LOGS TO 'mysql-bin.000003'"} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for _, c := range []struct{ positions, resume, why string }{
		{"file", "file:mysql-bin.000001:4", "purged"}, {"gtid", "gtid:0-1-1", "purged"},
		{"file", "file:mysql-bin.000009:4", "ahead of the server"}, {"gtid", "gtid:0-1-99999", "ahead of the server"},
	} {
		d, err := New(&config.Conn{CName: "cdc", Addrs: dsn + "p", Key: "t", Params: map[string]string{"server_id": "9", "positions": c.positions, "heartbeat": "200ms"}})
		if err != nil {
			t.Fatal(err)
		}
		src, err := d.(*CDC).OpenSource(context.Background(), stream.SourceOptions{Resume: c.resume})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var rerr error
		for ctx.Err() == nil && rerr == nil {
			_, rerr = src.Read(ctx, 10)
		}
		cancel()
		_ = src.Close(context.Background())
		if !stream.IsFatal(rerr) || !strings.Contains(rerr.Error(), c.why) || (c.why != "purged" && strings.Contains(rerr.Error(), "purged")) {
			t.Errorf("resuming from %s: error %v, want a fatal one saying %q", c.resume, rerr, c.why)
		}
		t.Logf("%s: %v", c.resume, rerr)
	}
}

// TestPositionsAndSeek reads the head and seeks to the earliest, latest
// and a given position, in both kinds, on a server whose oldest binlogs
// were purged.
func TestPositionsAndSeek(t *testing.T) {
	t.Parallel()
	srv := testenv.PrivateMariaDB(t, "--log-bin=mysql-bin", "--binlog-format=ROW", "--server-id=1")
	dsn := fmt.Sprintf("root@tcp(127.0.0.1:%d)/", srv.Port())
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{"CREATE DATABASE p", "CREATE TABLE p.t (id INT PRIMARY KEY)", "FLUSH BINARY LOGS",
		"INSERT INTO p.t VALUES (1)", "PURGE BINARY LOGS TO 'mysql-bin.000002'", "INSERT INTO p.t VALUES (2)"} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var gtidHead, file string
	var off int
	if err := db.QueryRow("SELECT @@gtid_binlog_pos").Scan(&gtidHead); err != nil {
		t.Fatal(err)
	}
	var skip1, skip2 sql.NullString
	if err := db.QueryRow("SHOW MASTER STATUS").Scan(&file, &off, &skip1, &skip2); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, c := range []struct{ kind, head, earliest, at string }{
		{"gtid", "gtid:" + gtidHead, "gtid:0-1-2", "gtid:0-1-3+1"},
		{"file", fmt.Sprintf("file:%s:%d", file, off), "file:mysql-bin.000002:4", "file:mysql-bin.000002:300"},
	} {
		d, err := New(&config.Conn{CName: "cdc", Addrs: dsn + "p", Key: "t", Params: map[string]string{"server_id": "9", "positions": c.kind}})
		if err != nil {
			t.Fatal(err)
		}
		cdc := d.(*CDC)
		ps, err := cdc.Positions(ctx, stream.SourceOptions{}, c.earliest)
		if err != nil || ps.Head != c.head {
			t.Errorf("%s: head %q (err %v), want %q", c.kind, ps.Head, err, c.head)
		}
		if c.kind == "file" && ps.Lag != int64(off-4) {
			t.Errorf("file: lag %d bytes, want %d", ps.Lag, off-4)
		}
		for _, s := range []struct {
			to   stream.Bound
			want string
		}{{stream.Bound{Kind: stream.Latest}, c.head}, {stream.Bound{Kind: stream.Earliest}, c.earliest}, {stream.Bound{Kind: stream.AtPosition, Position: c.at}, c.at}} {
			if got, err := cdc.SeekPosition(ctx, stream.SourceOptions{}, s.to); err != nil || got != s.want {
				t.Errorf("%s: seek %s: %q (err %v), want %q", c.kind, s.to, got, err, s.want)
			}
		}
		other := map[string]string{"gtid": "file:f:4", "file": "gtid:0-1-1"}[c.kind]
		if _, err := cdc.SeekPosition(ctx, stream.SourceOptions{}, stream.Bound{Kind: stream.AtPosition, Position: other}); err == nil {
			t.Errorf("%s: seek to %s: no error", c.kind, other)
		}
		// Positions the server cannot start at are refused: not a GTID
		// set, or beyond the binlog's head.
		bad := map[string][]string{"gtid": {"gtid:garbage", "gtid:0-1-99999", "gtid:7-1-1"}, "file": {"file:" + file + ":99999999", "file:mysql-bin.000099:4"}}[c.kind]
		for _, b := range bad {
			if got, err := cdc.SeekPosition(ctx, stream.SourceOptions{}, stream.Bound{Kind: stream.AtPosition, Position: b}); !errors.Is(err, stream.ErrBadPosition) {
				t.Errorf("%s: seek to %s: %q (err %v), want a bad position", c.kind, b, got, err)
			} else {
				t.Logf("%s: %v", b, err)
			}
		}
		if _, err := cdc.SeekPosition(ctx, stream.SourceOptions{}, stream.Bound{Kind: stream.AtTime, Time: time.Now()}); err == nil {
			t.Errorf("%s: seek to a time: no error", c.kind)
		}
	}
}

// TestColumnsChangeBehind reads changes made before and after a column was
// added, once both happened (the source behind the DDL): with
// binlog_row_metadata=FULL each change has its own columns; without it a
// change whose columns no longer match stops the job with what to set.
func TestColumnsChangeBehind(t *testing.T) {
	t.Parallel()
	for _, full := range []bool{true, false} {
		args := []string{"--log-bin=mysql-bin", "--binlog-format=ROW", "--server-id=1"}
		if full {
			args = append(args, "--binlog-row-metadata=FULL")
		}
		srv := testenv.PrivateMariaDB(t, args...)
		dsn := fmt.Sprintf("root@tcp(127.0.0.1:%d)/", srv.Port())
		db, err := sql.Open("mysql", dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.Exec("CREATE DATABASE p"); err != nil {
			t.Fatal(err)
		}
		d, err := New(&config.Conn{CName: "cdc", Addrs: dsn + "p", Key: "t", Params: map[string]string{"server_id": "9", "snapshot": "false"}})
		if err != nil {
			t.Fatal(err)
		}
		var head string
		if err := db.QueryRow("SELECT @@gtid_binlog_pos").Scan(&head); err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{"CREATE TABLE p.t (id INT PRIMARY KEY, v VARCHAR(10))", "INSERT INTO p.t VALUES (1, 'a')",
			"ALTER TABLE p.t ADD COLUMN w INT UNSIGNED", "INSERT INTO p.t VALUES (2, 'b', 4000000000)"} {
			if _, err := db.Exec(q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		src, err := d.(*CDC).OpenSource(context.Background(), stream.SourceOptions{Resume: "gtid:" + head})
		if err != nil {
			t.Fatal(err)
		}
		var rows []map[string]any
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var rerr error
		for ctx.Err() == nil && rerr == nil && len(rows) < 2 {
			var ms []*stream.Message
			ms, rerr = src.Read(ctx, 10)
			for _, m := range ms {
				rows = append(rows, m.Payload.(map[string]any))
			}
		}
		cancel()
		_ = src.Close(context.Background())
		if !full {
			if !stream.IsFatal(rerr) || !strings.Contains(rerr.Error(), "binlog_row_metadata") {
				t.Errorf("without row metadata: error %v, want a fatal one naming binlog_row_metadata", rerr)
			}
			continue
		}
		if rerr != nil || len(rows) != 2 {
			t.Fatalf("read %v (err %v)", rows, rerr)
		}
		if rows[0]["v"] != "a" || rows[0]["w"] != nil || len(rows[0]) != 6 {
			t.Errorf("the change before the DDL: %v", rows[0])
		}
		if rows[1]["v"] != "b" || rows[1]["w"] != uint32(4000000000) {
			t.Errorf("the change after the DDL: %v (w %T)", rows[1], rows[1]["w"])
		}
	}
}
