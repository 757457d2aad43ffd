package cli

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestInspectorBusyIsPerWorkerAtMost100: the inspector's step figure is
// busy_ratio per worker, capped at 100% (a sampled ratio of 2.014 with 2
// workers read "busy 101%"). It runs the asset's stepNode under node with
// stand-ins for the DOM helpers.
func TestInspectorBusyIsPerWorkerAtMost100(t *testing.T) {
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed")
	}
	src, err := os.ReadFile("console/inspector.js")
	if err != nil {
		t.Fatal(err)
	}
	text := string(src)
	start := strings.Index(text, "  function stepNode(")
	if start < 0 {
		t.Fatal("inspector.js has no stepNode")
	}
	end := strings.Index(text[start:], "\n  }\n")
	if end < 0 {
		t.Fatal("stepNode has no end")
	}
	script := `"use strict";
const num = (v) => String(v);
const fig = (label, value) => label + " " + value;
const node = (cls, title, lines) => ({ cls, lines, dataset: {} });
` + text[start:start+end+4] + `
for (const [ratio, workers] of [[2.014, 2], [0.5, 2], [3, 1]]) {
  const n = stepNode({ func: "F", busy: workers, busy_ratio: ratio, rows_per_sec: 0, in: 0, out: 0, errors: 0, retries: 0, dead: 0 }, { workers });
  console.log(n.lines.find((l) => l.startsWith("in step")) + " " + n.cls);
}
`
	out, err := exec.Command(nodeBin, "-e", script).CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	want := "in step 2/2 batches · busy 100% step hot\nin step 2/2 batches · busy 25% step\nin step 1/1 batches · busy 100% step hot\n"
	if string(out) != want {
		t.Fatalf("busy figures:\n%s\nwant\n%s", out, want)
	}
}
