package pgcdc

import (
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/kisflow-go/kisflow/config"
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
