package remote_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow"
	connfile "github.com/kisflow-go/kisflow/connector/file"
	connremote "github.com/kisflow-go/kisflow/connector/remote"
	"github.com/kisflow-go/kisflow/internal/testenv"
)

// In a stream, a remote step's failure takes the local path: the batch is
// retried and bisected, the one row the remote function fails on is
// dead-lettered, and the others go on to the sink.
func TestRemoteFailureIsBisectedAndDeadLettered(t *testing.T) {
	t.Parallel()
	preg := kisflow.NewRegistry()
	preg.MustRegister("Price", kisflow.Func(func(_ context.Context, f kisflow.Flow, rows []*order) error {
		for _, o := range rows {
			if o.ID == 42 {
				return errors.New("order 42 cannot be priced")
			}
			o.Price = 2 * o.Amount
		}
		return f.CommitRowBatch(rows)
	}))
	peng := testenv.Engine(t, preg, map[string]string{"f.yml": "kistype: func\nfname: Price\nfmode: Calculate\n"})
	addr := serveEngine(t, peng, "Price")

	dir := t.TempDir()
	var in strings.Builder
	for i := range 100 {
		fmt.Fprintf(&in, "{\"id\":%d,\"amount\":%d}\n", i, i)
	}
	if err := os.WriteFile(filepath.Join(dir, "in.jsonl"), []byte(in.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	creg := kisflow.NewRegistry()
	for _, install := range []func() error{func() error { return connremote.Install(creg) }, func() error { return connfile.Install(creg) }} {
		if err := install(); err != nil {
			t.Fatal(err)
		}
	}
	ceng := testenv.Engine(t, creg, map[string]string{"c.yml": fmt.Sprintf(`kistype: conn
cname: in
type: file
params:
  path: %[1]s/in.jsonl
---
kistype: conn
cname: out
type: file
params:
  path: %[1]s/out.jsonl
---
kistype: conn
cname: pricing
type: remote
addrs: %[2]s
params:
  registry: static
---
`, dir, addr) + remotePrice + "  retry_times: 1\n  retry_duration: 1\n---\n" + ordersFlow + "stream:\n  source: in\n  sink: out\n  batch_size: 100\n"})
	st := testenv.RunJob(t, ceng, "Orders", 100, 30*time.Second)
	if st.DeadLettered != 1 || st.Out != 99 {
		t.Fatalf("%d dead-lettered, %d written: want order 42 alone dead-lettered and 99 written", st.DeadLettered, st.Out)
	}
	out, _ := os.ReadFile(filepath.Join(dir, "out.jsonl"))
	if n := strings.Count(string(out), "\n"); n != 99 || strings.Contains(string(out), `"id":42,`) {
		t.Fatalf("out.jsonl has %d rows (want 99, without order 42)", n)
	}
}
