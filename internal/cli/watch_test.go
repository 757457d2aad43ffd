package cli

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kisflow-go/kisflow/config"
)

// A flow's fingerprint changes with its YAML, its functions, the
// connectors it names and the global file, and with nothing else.
func TestFlowPrintsFollowWhatAFlowUses(t *testing.T) {
	t.Parallel()
	flow := func(name, expr, sinkType string) string {
		return `kistype: flow
status: 1
flow_name: ` + name + `
flows:
  - fname: Calc` + name + `
stream:
  source: in_` + name + `
  sink: out_` + name + `
---
kistype: func
fname: Calc` + name + `
fmode: Calculate
calc:
  v: ` + expr + `
---
kistype: conn
cname: in_` + name + `
type: file
params:
  path: ` + name + `.jsonl
---
kistype: conn
cname: out_` + name + `
type: ` + sinkType + `
`
	}
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	prints := func() map[string]string {
		set, err := config.Import(dir)
		if err != nil {
			t.Fatal(err)
		}
		return flowPrints(set)
	}
	write("a.yml", flow("A", "id * 2", "stdout"))
	write("b.yml", flow("B", "id * 3", "stdout"))
	p0 := prints()
	write("b.yml", flow("B", "id * 4", "stdout")) // B's function
	p1 := prints()
	if p1["A"] != p0["A"] || p1["B"] == p0["B"] {
		t.Fatalf("B's function changed: A %v, B %v; want only B changed", p1["A"] != p0["A"], p1["B"] != p0["B"])
	}
	write("b.yml", flow("B", "id * 4", "discard")) // B's sink connector
	p2 := prints()
	if p2["A"] != p1["A"] || p2["B"] == p1["B"] {
		t.Fatal("B's connector changed: want only B changed")
	}
	write("global.yml", "kistype: global\nprometheus_enable: true\n")
	p3 := prints()
	if p3["A"] == p2["A"] || p3["B"] == p2["B"] {
		t.Fatal("the global file changed: want both changed")
	}
	write("c.yml", "kistype: conn\ncname: unused\ntype: stdout\n") // a connector no flow uses
	p4 := prints()
	if p4["A"] != p3["A"] || p4["B"] != p3["B"] {
		t.Fatal("an unused connector changed a flow's fingerprint")
	}
}
