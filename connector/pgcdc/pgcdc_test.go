package pgcdc

import (
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/internal/cdcsnap"
	"github.com/kisflow-go/kisflow/internal/testenv"
)

func TestParamsRefused(t *testing.T) {
	t.Parallel()
	base := func(params map[string]string) *config.Conn {
		return &config.Conn{CName: "cdc", Addrs: "postgres://u@127.0.0.1:5432/db", Key: "orders", Params: params}
	}
	testenv.RefusesParams(t, New, base(map[string]string{"slot": "s", "publication": "p", "snapshots": "true"}), "snapshots", "snapshot")
	testenv.RefusesParams(t, New, base(map[string]string{"publication": "p"}), "slot")
	testenv.RefusesParams(t, New, base(map[string]string{"slot": "s", "publication": "p", "snapshot": "maybe"}), "snapshot")
	testenv.RefusesParams(t, New, base(map[string]string{"slot": "Bad-Name", "publication": "p"}), "slot")
	testenv.RefusesParams(t, New, &config.Conn{CName: "cdc", Addrs: "postgres://u@127.0.0.1/db", Params: map[string]string{"slot": "s", "publication": "p"}}, "key")
	testenv.RefusesParams(t, New, &config.Conn{CName: "cdc", Addrs: "postgres://u@127.0.0.1/db", Key: "a.b.c", Params: map[string]string{"slot": "s", "publication": "p"}}, "a.b.c")
	testenv.RefusesParams(t, New, &config.Conn{CName: "cdc", Key: "t", Params: map[string]string{"slot": "s", "publication": "p"}}, "addrs")
	d, err := New(base(map[string]string{"slot": "s", "publication": "p", "create_slot": "false"}))
	if err != nil {
		t.Fatal(err)
	}
	if c := d.(*CDC); c.p.CreateSlot || !c.p.Snapshot || !c.p.CreatePublication || c.tables[0].String() != "public.orders" {
		t.Fatalf("decoded %+v, tables %v", c.p, c.tables)
	}
	if id := d.(*CDC).Identity(); id != "127.0.0.1:5432/db/s" {
		t.Errorf("identity %q, want server, database and slot", id)
	}
}

func TestPositions(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "0/16B3748", "0/16B3700:5", "snapshot:0/16B3700:12", "1A/FF000000"} {
		p, err := parsePosition(s)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if got := p.String(); s != "" && got != s {
			t.Errorf("%q reads back as %q", s, got)
		}
	}
	for _, s := range []string{"x", "0/1:y", "0/1:-2", "snapshot:"} {
		if _, err := parsePosition(s); err == nil {
			t.Errorf("%q: no error", s)
		}
	}
}

func TestAppendLSN(t *testing.T) {
	t.Parallel()
	for _, lsn := range []pglogrepl.LSN{0, 1, 0x16B3748, 0x1A_FF000000, 0xFFFFFFFF_FFFFFFFF, 0x10_00000010} {
		if got, want := string(appendLSN(nil, lsn)), lsn.String(); got != want {
			t.Errorf("appendLSN(%d) = %q, want %q", uint64(lsn), got, want)
		}
	}
	if got := (position{snapshot: true}).String(); got != "snapshot:0/0:0" {
		t.Errorf("a new snapshot's position reads %q", got)
	}
}

func TestPositionWithRanges(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		`snapshot:0/16B3700:12 {"tables":["public.a","public.b"],"at":"0/16B3700","t":0,"k":["42"]}`,
		`snapshot:0/16B3700:12 {"tables":["public.a","public.b"],"spans":[{"at":"0/16B3700","t":0,"k":["42"]}],"at":"0/17000000","t":1,"k":["a \"quoted\" key, with spaces"]}`,
		`snapshot:0/16B3700:0 {"tables":["public.a"],"at":"0/16B3700","t":0}`,
		`0/16B3800:3 {"tables":["public.a"],"spans":[{"at":"0/16B3700","t":0,"k":["42"]}],"at":"0/17000000"}`,
		`0/16B3900 {"tables":["public.a"],"spans":[{"at":"0/16B3700","t":1}],"at":"0/17000000"}`,
	} {
		p, err := parsePosition(s)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if got := p.String(); got != s {
			t.Errorf("%q reads back as %q", s, got)
		}
	}
	for _, s := range []string{`0/1 {`, `0/1 {"tables":[],"at":"x"}`, `snapshot:0/1:2 {"tables":["a"],"at":"0/1","t":5}`, `0/1 {"tables":["a"],"at":"0/1","extra":1}`} {
		if _, err := parsePosition(s); err == nil {
			t.Errorf("%q: no error", s)
		}
	}
}

func TestSnapshotQuery(t *testing.T) {
	t.Parallel()
	tb := table{schema: "public", name: "t"}
	cols := []keyCol{{Name: "a", Kind: cdcsnap.Int}, {Name: "b", Kind: cdcsnap.Text}}
	q, args := snapshotQuery(tb, cols, rowKey{{I: 3}, {S: "x"}})
	if want := `SELECT * FROM "public"."t" WHERE ("a", "b" COLLATE "C") > ($1, $2) ORDER BY "a", "b" COLLATE "C"`; q != want || len(args) != 2 || args[0] != int64(3) || args[1] != "x" {
		t.Errorf("query %s %v", q, args)
	}
	if q, args := snapshotQuery(tb, nil, nil); q != `SELECT * FROM "public"."t"` || args != nil {
		t.Errorf("keyless query %s %v", q, args)
	}
	u := keyCol{Name: "u", Kind: cdcsnap.Bytes, Type: "uuid"}
	k, ok := keyOf([]keyCol{u}, map[string]any{"u": [16]byte{1, 2}})
	if !ok {
		t.Fatal("uuid key not read")
	}
	enc := cdcsnap.Encode([]keyCol{u}, k)
	back, err := cdcsnap.Decode([]keyCol{u}, enc)
	if err != nil || cdcsnap.Compare([]keyCol{u}, k, back) != 0 {
		t.Errorf("uuid key %v reads back as %v (%v)", enc, back, err)
	}
	if a := keyArgs([]keyCol{u}, back); a[0] != [16]byte{1, 2} {
		t.Errorf("uuid key as an argument: %v", a[0])
	}
}
