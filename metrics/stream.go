package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// StreamStats is what a running stream reports at each scrape.
type StreamStats struct {
	Committed    int64 // messages acknowledged
	DeadLettered int64 // messages sent to the dead-letter sink
	Retries      int64 // batch runs retried by the runtime
	InFlight     int64 // messages read and not yet acknowledged
	// Lag is the number of messages the source holds that the stream has
	// not read yet; -1 when the source cannot tell.
	Lag int64
	// SourceErrors and SinkErrors count failed calls to the source (reads,
	// acknowledgements) and to the sink (writes, commits) that the runtime
	// retried because the service was unavailable.
	SourceErrors, SinkErrors int64
	// SourceConnected and SinkConnected are false while the runtime retries
	// an unavailable source or sink.
	SourceConnected, SinkConnected bool
}

// streams is a collector reading the stats of the running streams at
// scrape time, so the figures are exact without a polling loop.
type streams struct {
	mu    sync.Mutex
	stats map[string]func() StreamStats

	committed, dead, retries, inflight, lag *prometheus.Desc
	srcErrs, sinkErrs, connected            *prometheus.Desc
}

func newStreams() *streams {
	flow := []string{LabelFlow}
	return &streams{
		stats:     map[string]func() StreamStats{},
		committed: prometheus.NewDesc("kisflow_stream_messages_total", "Messages a stream acknowledged (processed, filtered or dead-lettered).", flow, nil),
		dead:      prometheus.NewDesc("kisflow_dead_letters_total", "Messages written to the dead-letter sink.", flow, nil),
		retries:   prometheus.NewDesc("kisflow_batch_retries_total", "Batch runs retried by the streaming runtime.", flow, nil),
		inflight:  prometheus.NewDesc("kisflow_in_flight_messages", "Messages read from the source and not yet acknowledged.", flow, nil),
		lag:       prometheus.NewDesc("kisflow_source_lag", "Messages of the source the stream has not acknowledged yet (not delivered, or delivered and not acknowledged).", flow, nil),
		srcErrs:   prometheus.NewDesc("kisflow_source_errors_total", "Failed source reads and acknowledgements, retried while the source was unavailable.", flow, nil),
		sinkErrs:  prometheus.NewDesc("kisflow_sink_errors_total", "Failed sink writes and commits, retried while the sink was unavailable.", flow, nil),
		connected: prometheus.NewDesc("kisflow_stream_connected", "1 while the stream's source or sink (side) is reachable, 0 while the runtime retries it.", []string{LabelFlow, "side"}, nil),
	}
}

func (s *streams) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{s.committed, s.dead, s.retries, s.inflight, s.lag, s.srcErrs, s.sinkErrs, s.connected} {
		ch <- d
	}
}

func (s *streams) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	fns := make(map[string]func() StreamStats, len(s.stats))
	for k, v := range s.stats {
		fns[k] = v
	}
	s.mu.Unlock()
	for flow, fn := range fns {
		st := fn()
		ch <- prometheus.MustNewConstMetric(s.committed, prometheus.CounterValue, float64(st.Committed), flow)
		ch <- prometheus.MustNewConstMetric(s.dead, prometheus.CounterValue, float64(st.DeadLettered), flow)
		ch <- prometheus.MustNewConstMetric(s.retries, prometheus.CounterValue, float64(st.Retries), flow)
		ch <- prometheus.MustNewConstMetric(s.inflight, prometheus.GaugeValue, float64(st.InFlight), flow)
		ch <- prometheus.MustNewConstMetric(s.srcErrs, prometheus.CounterValue, float64(st.SourceErrors), flow)
		ch <- prometheus.MustNewConstMetric(s.sinkErrs, prometheus.CounterValue, float64(st.SinkErrors), flow)
		ch <- prometheus.MustNewConstMetric(s.connected, prometheus.GaugeValue, gauge(st.SourceConnected), flow, "source")
		ch <- prometheus.MustNewConstMetric(s.connected, prometheus.GaugeValue, gauge(st.SinkConnected), flow, "sink")
		if st.Lag >= 0 {
			ch <- prometheus.MustNewConstMetric(s.lag, prometheus.GaugeValue, float64(st.Lag), flow)
		}
	}
}

// TrackStream reports a running stream's stats under its flow's name until
// the returned function is called. stats is called at scrape time and must
// be safe for concurrent use and quick.
func (m *Metrics) TrackStream(flow string, stats func() StreamStats) (untrack func()) {
	m.streams.mu.Lock()
	m.streams.stats[flow] = stats
	m.streams.mu.Unlock()
	return func() {
		m.streams.mu.Lock()
		delete(m.streams.stats, flow)
		m.streams.mu.Unlock()
	}
}

func gauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
