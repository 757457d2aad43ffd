// Package metrics holds the Prometheus collectors of one engine, on a
// registry of its own (never the process default), under the original
// KisFlow names plus the streaming runtime's.
//
// Durations are in seconds. Labels: flow_name, func_name, func_mode.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Label names.
const (
	LabelFlow = "flow_name"
	LabelFunc = "func_name"
	LabelMode = "func_mode"
)

// Metrics is one engine's collectors. Make it with New; it is safe for
// concurrent use.
type Metrics struct {
	// Registry is where the collectors are registered; serve it with
	// promhttp.HandlerFor (the admin server does).
	Registry *prometheus.Registry

	// The original KisFlow metrics.
	DataTotal     prometheus.Counter       // kisflow_data_total: rows into every flow
	FlowData      *prometheus.CounterVec   // flow_data_total{flow_name}
	FlowSchedules *prometheus.CounterVec   // flow_schedule_cnts{flow_name}
	FuncSchedules *prometheus.CounterVec   // func_schedule_cnts{func_name,func_mode}
	FuncDuration  *prometheus.HistogramVec // func_run_duration{func_name,func_mode}
	FlowDuration  *prometheus.HistogramVec // flow_run_duration{flow_name}
	FuncRowsIn    *prometheus.CounterVec   // kisflow_func_rows_in_total{flow_name,func_name}
	FuncRowsOut   *prometheus.CounterVec   // kisflow_func_rows_out_total{flow_name,func_name}
	FuncErrors    *prometheus.CounterVec   // kisflow_func_errors_total{flow_name,func_name}
	RowsRejected  *prometheus.CounterVec   // kisflow_rows_rejected_total{flow_name,func_name}
	Retries       *prometheus.CounterVec   // kisflow_retries_total{flow_name,func_name}
	BatchLatency  *prometheus.HistogramVec // kisflow_batch_latency_seconds{flow_name}

	// Streams add, per running stream (see TrackStream):
	// kisflow_stream_messages_total, kisflow_dead_letters_total,
	// kisflow_batch_retries_total, kisflow_in_flight_messages and, where
	// the source can tell, kisflow_source_lag.
	streams *streams
}

// New returns collectors registered on a new registry, together with the
// Go runtime and process collectors.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := factory{reg}
	flow := []string{LabelFlow}
	fn := []string{LabelFunc, LabelMode}
	flowFn := []string{LabelFlow, LabelFunc}
	buckets := prometheus.ExponentialBuckets(0.0001, 4, 10) // 100µs .. 26s
	st := newStreams()
	reg.MustRegister(st)
	return &Metrics{
		streams:       st,
		Registry:      reg,
		DataTotal:     f.counter("kisflow_data_total", "Rows that entered any flow."),
		FlowData:      f.counterVec("flow_data_total", "Rows that entered a flow.", flow),
		FlowSchedules: f.counterVec("flow_schedule_cnts", "Runs of a flow.", flow),
		FuncSchedules: f.counterVec("func_schedule_cnts", "Calls of a function.", fn),
		FuncDuration:  f.histogramVec("func_run_duration", "Duration of one function call in seconds.", fn, buckets),
		FlowDuration:  f.histogramVec("flow_run_duration", "Duration of one flow run in seconds.", flow, buckets),
		FuncRowsIn:    f.counterVec("kisflow_func_rows_in_total", "Rows a function was called with.", flowFn),
		FuncRowsOut:   f.counterVec("kisflow_func_rows_out_total", "Rows a function committed.", flowFn),
		FuncErrors:    f.counterVec("kisflow_func_errors_total", "Function calls that returned an error.", flowFn),
		RowsRejected:  f.counterVec("kisflow_rows_rejected_total", "Rows a function could not receive: not convertible to its parameter type.", flowFn),
		Retries:       f.counterVec("kisflow_retries_total", "Function calls retried by the retry filter.", flowFn),
		BatchLatency:  f.histogramVec("kisflow_batch_latency_seconds", "Time from reading a batch to committing it, in seconds.", flow, buckets),
	}
}

type factory struct{ reg *prometheus.Registry }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels []string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f factory) histogramVec(name, help string, labels []string, buckets []float64) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	f.reg.MustRegister(h)
	return h
}
