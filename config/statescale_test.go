package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStateScaleLint: a windowed flow on a source that does not partition
// by key is warned about at stream.source, once, whatever its workers; on
// a kafka source it is not.
func TestStateScaleLint(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	files := map[string]string{
		"funcs.yml": "kistype: func\nfname: Win\nfmode: Calculate\nwindow:\n  type: tumbling\n  size: 1m\n  group_by: [user]\n  aggregate:\n    n: count()\n" +
			"---\nkistype: func\nfname: Plain\nfmode: Calculate\n",
		"conns.yml": "kistype: conn\ncname: rs\ntype: redis\naddrs: 127.0.0.1:6379\nkey: s\nparams:\n  mode: stream\n" +
			"---\nkistype: conn\ncname: k\ntype: kafka\naddrs: 127.0.0.1:9092\nkey: t\n" +
			"---\nkistype: conn\ncname: js\ntype: nats\naddrs: nats://127.0.0.1:4222\nkey: s\n",
		"flows.yml": "kistype: flow\nstatus: 1\nflow_name: OnRedis\nflows:\n  - fname: Win\nstream:\n  source: rs\n  workers: 4\n" +
			"---\nkistype: flow\nstatus: 1\nflow_name: OnNATS\nflows:\n  - fname: Win\nstream:\n  source: js\n  workers: 4\n  key: user\n" +
			"---\nkistype: flow\nstatus: 1\nflow_name: OnKafka\nflows:\n  - fname: Win\nstream:\n  source: k\n  workers: 4\n" +
			"---\nkistype: flow\nstatus: 1\nflow_name: NoWindow\nflows:\n  - fname: Plain\nstream:\n  source: rs\n  workers: 4\n",
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	probs, err := Lint(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range probs {
		got = append(got, p.String())
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{
		`flows.yml:7: warning: flow "OnRedis": the windows of Win are state kept per process, and source "rs" (type redis) does not partition messages by key`,
		`flows.yml:16: warning: flow "OnNATS": the windows of Win are state kept per process, and source "js" (type nats)`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("missing %q in:\n%s", want, all)
		}
	}
	for _, not := range []string{`"OnKafka"`, `"NoWindow"`, `stream.key`} {
		if strings.Contains(all, not) {
			t.Errorf("unexpected warning about %s:\n%s", not, all)
		}
	}
}
