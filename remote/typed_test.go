package remote_test

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// TestRemoteStepKeepsIntegers: a row through a YAML calc served by
// `kisflow serve`, into SQLite exactly once, creating the table, comes
// out typed as through the same calc run locally: the id 2^53+1 an
// integer of the same value, the price an integer (it was
// 9.00719925474099e+15|real|6.0: the sink read the remote step's JSON
// text rows with floats for numbers).
func TestRemoteStepKeepsIntegers(t *testing.T) {
	t.Parallel()
	pdir := writeFiles(t, map[string]string{"funcs.yml": providerYAML})
	_, addr := serving(t, pdir, "--registry", "none")
	const in = `{"id":9007199254740993,"amount":3,"user":"a"}` + "\n"
	conns := "kistype: conn\ncname: in\ntype: file\nparams:\n  path: in.jsonl\n---\n" +
		"kistype: conn\ncname: out\ntype: sqlite\nkey: priced\nparams:\n  path: out.db\n  create: \"true\"\n  columns: id,amount,price\n"
	flow := "kistype: flow\nstatus: 1\nflow_name: Orders\nflows:\n  - fname: Price\nstream:\n  source: in\n  sink: out\n  delivery: exactly-once\n"
	got := map[string]string{}
	for name, files := range map[string]map[string]string{
		"local": {"in.jsonl": in, "conns.yml": conns, "flow.yml": providerYAML + "---\n" + flow},
		"remote": {"in.jsonl": in, "conns.yml": conns + "---\nkistype: conn\ncname: pricing\ntype: remote\naddrs: " + addr + "\nparams:\n  registry: static\n  service: prov\n",
			"flow.yml": remotePrice + "---\n" + flow},
	} {
		dir := writeFiles(t, files)
		run := start(t, "run", dir, "--progress", "never")
		if code := run.wait(t, 30*time.Second); code != 0 {
			t.Fatalf("%s: run exited %d: %s", name, code, run.output())
		}
		db, err := sql.Open("sqlite", filepath.Join(dir, "out.db"))
		if err != nil {
			t.Fatal(err)
		}
		var id, idType, price, priceType string
		err = db.QueryRow("select id, typeof(id), price, typeof(price) from priced").Scan(&id, &idType, &price, &priceType)
		db.Close()
		if err != nil {
			t.Fatalf("%s: %v: %s", name, err, run.output())
		}
		got[name] = fmt.Sprintf("%s|%s|%s|%s", id, idType, price, priceType)
	}
	if want := "9007199254740993|integer|6|integer"; got["local"] != want || got["remote"] != want {
		t.Fatalf("local %s, remote %s, want both %s", got["local"], got["remote"], want)
	}
}
