package kisflow_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	kishttp "github.com/kisflow-go/kisflow/connector/http"
	"github.com/kisflow-go/kisflow/internal/testenv"
	"github.com/kisflow-go/kisflow/plugin"
)

// pageView is a row of the queryable-state test.
type pageView struct {
	ID   int    `json:"id"`
	User string `json:"user"`
	Page string `json:"page"`
}

// The admin server answers GET /state/{flow}/{key} with the committed
// value and map states the flow's running job holds for key, while the
// job runs: a batch in flight is not in the answer, and does not hold the
// answer up. Unknown flows and keys are 404 with a JSON error, other
// methods 405, and a finished job's state is gone.
func TestAdminServesTheCommittedStateOfARunningJob(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"flow.yml": "kistype: flow\nstatus: 1\nflow_name: Visits\nflows:\n  - fname: Count\n" +
			"stream:\n  source: api\n  sink: out\n  linger: 1ms\n  workers: 2\n  key: user\n",
		"func.yml": "kistype: func\nfname: Count\nfmode: Calculate\n",
		"conns.yml": "kistype: conn\ncname: api\ntype: http\naddrs: 127.0.0.1:0\nkey: /views\n---\n" +
			"kistype: conn\ncname: out\ntype: file\nparams:\n  path: out.jsonl\n",
		"global.yml": "kistype: global\nplugins:\n  metrics:\n    admin: {listen: \"127.0.0.1:0\"}\n",
	})
	visits := kisflow.NewValueState[int]("visits")
	pages := kisflow.NewMapState[string, int]("pages")
	entered, release := make(chan struct{}), make(chan struct{})
	count := func(ctx context.Context, f kisflow.Flow, rows []*pageView) error {
		for _, v := range rows {
			n, _, err := visits.Get(f, v.User)
			if err != nil {
				return err
			}
			if err := visits.Set(f, v.User, n+1); err != nil {
				return err
			}
			p, _, err := pages.Get(f, v.User, v.Page)
			if err != nil {
				return err
			}
			if err := pages.Put(f, v.User, v.Page, p+1); err != nil {
				return err
			}
			if v.Page == "slow" { // hold the batch in flight, its changes made
				close(entered)
				select {
				case <-release:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			if err := f.CommitRow(v); err != nil {
				return err
			}
		}
		return nil
	}
	set, err := config.Import(dir)
	if err != nil {
		t.Fatal(err)
	}
	reg := streamRegistry(t)
	reg.MustRegister("Count", kisflow.Func(count))
	eng, err := kisflow.NewEngine(reg, set)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	defer eng.Close(ctx)
	_, stop := testenv.StartJob(t, eng, "Visits")
	p, ok := eng.Plugin(plugin.TypeMetrics, "admin")
	if !ok {
		t.Fatal("no metrics plugin admin")
	}
	base := "http://" + p.(*plugin.Admin).Addr().String() + "/state/"
	api, _ := eng.Connector(ctx, "api")
	ingest := "http://" + api.Driver().(*kishttp.Ingest).Addr() + "/views"
	post := func(body string) {
		resp, err := http.Post(ingest, "application/json", strings.NewReader(body))
		if err != nil {
			t.Error(err)
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("POST %s: %d %s", body, resp.StatusCode, b)
		}
	}
	const odd = "ann/b c" // a key with a slash and a space, escaped in the URL
	query := func(flow, key string, status int, want string) {
		t.Helper()
		start := time.Now()
		resp, err := http.Get(base + flow + "/" + url.PathEscape(key))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("GET %s/%s took %v", flow, key, took)
		}
		if resp.StatusCode != status || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("GET %s/%s: %d %s %s, want %d JSON", flow, key, resp.StatusCode, resp.Header.Get("Content-Type"), b, status)
		}
		if status != http.StatusOK {
			var e struct{ Error string }
			if err := json.Unmarshal(b, &e); err != nil || e.Error == "" {
				t.Fatalf("GET %s/%s: %s, want a JSON error", flow, key, b)
			}
			return
		}
		if got := strings.TrimSpace(string(b)); got != want {
			t.Fatalf("GET %s/%s: %s\nwant %s", flow, key, got, want)
		}
	}

	query("Visits", "bob", http.StatusNotFound, "") // running, no state yet
	query("Nope", "bob", http.StatusNotFound, "")
	resp, err := http.Post(base+"Visits/bob", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Fatalf("POST /state: %d, Allow %q; want 405, GET, HEAD", resp.StatusCode, resp.Header.Get("Allow"))
	}

	post(`[{"id":1,"user":"bob","page":"home"},{"id":2,"user":"bob","page":"cart"},{"id":3,"user":"bob","page":"home"},{"id":4,"user":"` + odd + `","page":"home"}]`)
	query("Visits", "bob", http.StatusOK, `{"flow":"Visits","key":"bob","state":{"pages":{"cart":1,"home":2},"visits":3}}`)
	query("Visits", odd, http.StatusOK, `{"flow":"Visits","key":"ann/b c","state":{"pages":{"home":1},"visits":1}}`)
	query("Visits", "carl", http.StatusNotFound, "")

	// A batch held in flight has changed bob's state in its transaction:
	// the answer is still the committed state, and comes at once.
	done := make(chan struct{})
	go func() { defer close(done); post(`[{"id":5,"user":"bob","page":"slow"}]`) }()
	select {
	case <-entered:
	case <-time.After(60 * time.Second):
		t.Fatal("the slow batch did not start")
	}
	query("Visits", "bob", http.StatusOK, `{"flow":"Visits","key":"bob","state":{"pages":{"cart":1,"home":2},"visits":3}}`)
	close(release)
	<-done
	query("Visits", "bob", http.StatusOK, `{"flow":"Visits","key":"bob","state":{"pages":{"cart":1,"home":2,"slow":1},"visits":4}}`)

	if err := stop(); err != nil {
		t.Fatal(err)
	}
	query("Visits", "bob", http.StatusNotFound, "") // the job ended
}
