package kisflow_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	kishttp "github.com/kisflow-go/kisflow/connector/http"
	kisredis "github.com/kisflow-go/kisflow/connector/redis"
	"github.com/kisflow-go/kisflow/internal/testenv"
)

// A request's W3C trace context becomes the parent of the flow run, whose
// functions are its children; the sink writes in a span of its own. The
// job's stream metrics are scraped while it runs.
func TestJobContinuesTheSourceTraceAndReportsStreamMetrics(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"flow.yml": "kistype: flow\nstatus: 1\nflow_name: Ingest\nflows:\n  - fname: Scale\nstream:\n  source: api\n  sink: out\n  linger: 1ms\n",
		"func.yml": "kistype: func\nfname: Scale\nfmode: Calculate\ncalc:\n  value: value * 10\n",
		"conns.yml": "kistype: conn\ncname: api\ntype: http\naddrs: 127.0.0.1:0\nkey: /readings\n---\n" +
			"kistype: conn\ncname: out\ntype: file\nparams:\n  path: out.jsonl\n",
	})
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	set, err := config.Import(dir)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := kisflow.NewEngine(streamRegistry(t), set, kisflow.WithTracerProvider(tp))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	defer eng.Close(ctx)
	_, stop := testenv.StartJob(t, eng, "Ingest")

	api, _ := eng.Connector(ctx, "api")
	url := "http://" + api.Driver().(*kishttp.Ingest).Addr() + "/readings"
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`[{"sensor":"a","value":1},{"sensor":"b","value":2}]`))
	req.Header.Set("traceparent", "00-"+traceID+"-"+parentID+"-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}

	// The HTTP source answers once the batch is committed; the metrics
	// show it before the job ends.
	values := gather(t, eng)
	if values[`kisflow_stream_messages_total{flow_name="Ingest"}`] != 2 ||
		values[`kisflow_batch_latency_seconds_count{flow_name="Ingest"}`] < 1 ||
		values[`kisflow_in_flight_messages{flow_name="Ingest"}`] != 0 {
		t.Errorf("stream metrics: %v", values)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, still := gather(t, eng)[`kisflow_in_flight_messages{flow_name="Ingest"}`]; still {
		t.Error("a finished job is still reported")
	}

	byName := map[string]tracetest.SpanStub{}
	for _, s := range exp.GetSpans() {
		byName[s.Name] = s
	}
	run, fn, sink := byName["flow Ingest"], byName["func Scale"], byName["sink out"]
	if !run.SpanContext.IsValid() || !fn.SpanContext.IsValid() || !sink.SpanContext.IsValid() {
		t.Fatalf("spans %v, want flow Ingest, func Scale, sink out", names(exp.GetSpans()))
	}
	for _, s := range []tracetest.SpanStub{run, sink} {
		if s.SpanContext.TraceID().String() != traceID || s.Parent.SpanID().String() != parentID || !s.Parent.IsRemote() {
			t.Errorf("%s: trace %s parent %s; want the request's trace and span", s.Name, s.SpanContext.TraceID(), s.Parent.SpanID())
		}
	}
	if fn.Parent.SpanID() != run.SpanContext.SpanID() {
		t.Errorf("func span's parent is not the flow run")
	}
}

// gather returns the engine's metrics as "name{labels}" -> value.
func gather(t *testing.T, eng *kisflow.Engine) map[string]float64 {
	t.Helper()
	mfs, err := eng.Metrics().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			key := mf.GetName() + "{" + strings.Join(labels, ",") + "}"
			switch {
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				out[mf.GetName()+"_count{"+strings.Join(labels, ",")+"}"] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

// A Redis Streams job reports its consumer group's lag while it holds a
// batch unacknowledged, and none once the batch is done.
func TestJobReportsTheSourceLag(t *testing.T) {
	t.Parallel()
	addr := testenv.Redis.Addr(t)
	key := testenv.Name("kflag")
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"flow.yml": "kistype: flow\nstatus: 1\nflow_name: Lagging\nflows:\n  - fname: Hold\nstream:\n  source: in\n  sink: out\n  linger: 1ms\n",
		"func.yml": "kistype: func\nfname: Hold\nfmode: Calculate\n",
		"conns.yml": "kistype: conn\ncname: in\ntype: redis\naddrs: " + addr + "\nkey: " + key + "\nparams:\n  mode: stream\n---\n" +
			"kistype: conn\ncname: out\ntype: file\nparams:\n  path: out.jsonl\n",
	})
	reg := streamRegistry(t)
	if err := kisredis.Install(reg); err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}, 1), make(chan struct{})
	reg.MustRegister("Hold", kisflow.Func(func(ctx context.Context, f kisflow.Flow, rows []*reading) error {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
		for _, r := range rows {
			_ = f.CommitRow(r)
		}
		return nil
	}))
	eng := dirEngine(t, reg, dir)
	defer eng.Close(context.Background())
	ctx := context.Background()
	in, err := eng.Connector(ctx, "in")
	if err != nil {
		t.Fatal(err)
	}
	rds := in.Driver().(*kisredis.Redis)
	defer rds.Client().Del(context.Background(), key)
	rows := make([]any, 5)
	for i := range rows {
		rows[i] = map[string]any{"sensor": fmt.Sprint("s", i), "value": i}
	}
	if err := rds.Write(ctx, rows); err != nil {
		t.Fatal(err)
	}
	_, stop := testenv.StartJob(t, eng, "Lagging")

	const gauge = `kisflow_source_lag{flow_name="Lagging"}`
	<-entered
	if got := gather(t, eng)[gauge]; got != 5 {
		t.Errorf("lag while the batch is held: %v, want 5", got)
	}
	close(release)
	deadline := time.Now().Add(10 * time.Second)
	for gather(t, eng)[gauge] != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("lag after the batch: %v, want 0", gather(t, eng)[gauge])
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
