package kisflow_test

import (
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/internal/testenv"
)

// otlpCollector is an OTLP/HTTP trace receiver: it decodes what exporters
// POST to /v1/traces.
type otlpCollector struct {
	mu       sync.Mutex
	requests []*coltrace.ExportTraceServiceRequest
	headers  []http.Header
}

func (c *otlpCollector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
		http.NotFound(w, r)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = gz
	}
	data, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req := &coltrace.ExportTraceServiceRequest{}
	if err := proto.Unmarshal(data, req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	c.requests = append(c.requests, req)
	c.headers = append(c.headers, r.Header.Clone())
	c.mu.Unlock()
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// The tracing plugin, configured in the global file, exports a run's spans
// to an OTLP/HTTP collector, with the service name and headers it was
// given (expanded from the environment); closing the engine flushes them.
func TestTracingPluginExportsOverOTLP(t *testing.T) {
	t.Parallel()
	col := &otlpCollector{}
	srv := httptest.NewServer(col)
	defer srv.Close()
	endpoint := strings.TrimPrefix(srv.URL, "http://")
	// Names of this test's own, so tests running in parallel do not see them.
	for k, v := range map[string]string{"KISFLOW_TEST_OTLP_TOKEN": "s3cret", "KISFLOW_TEST_OTLP_ENDPOINT": endpoint} {
		if err := os.Setenv(k, v); err != nil {
			t.Fatal(err)
		}
		defer os.Unsetenv(k)
	}

	reg := kisflow.NewRegistry()
	reg.MustRegister("a", passThrough[score])
	docs := chain("f", "a")
	docs["global.yml"] = "kistype: global\nplugins:\n  tracing:\n    otlp:\n      endpoint: ${KISFLOW_TEST_OTLP_ENDPOINT}" +
		"\n      insecure: true\n      service_name: orders-svc\n      headers: {authorization: \"Bearer ${KISFLOW_TEST_OTLP_TOKEN}\"}\n"
	eng := testenv.Engine(t, reg, docs)
	ctx := context.Background()
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	fl := mustFlow(t, eng, "f")
	_ = fl.CommitRowBatch([]*score{{ID: 1}, {ID: 2}})
	if _, err := fl.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if err := eng.Close(ctx); err != nil {
		t.Fatal(err)
	}

	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.requests) == 0 {
		t.Fatal("the collector received no export")
	}
	if got := col.headers[0].Get("Authorization"); got != "Bearer s3cret" {
		t.Errorf("authorization header %q, want the expanded token", got)
	}
	spans := map[string]string{} // name -> service.name
	for _, req := range col.requests {
		for _, rs := range req.GetResourceSpans() {
			service := ""
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.GetKey() == "service.name" {
					service = kv.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					spans[s.GetName()] = service
				}
			}
		}
	}
	for _, name := range []string{"flow f", "func a"} {
		if svc, ok := spans[name]; !ok || svc != "orders-svc" {
			t.Errorf("span %q: service %q, present %v; exported %v", name, svc, ok, spans)
		}
	}
}
