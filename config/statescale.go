package config

import (
	"slices"
	"strings"
)

// unpartitionedSources are the connector types whose source hands a
// stream's messages to the processes that read it without regard to
// their key: a consumer group, durable consumer or queue gives each
// message to any one of them; a plain subscription gives every message to
// each of them. Only a kafka source partitions by key and moves keyed
// state with its partitions between processes.
var unpartitionedSources = []string{"redis", "nats", "rabbitmq", "mqtt", "http"}

// checkStateScale warns about a flow whose functions keep state in
// windows when its source does not partition by key: in one process it
// holds, whatever the workers (a process's windows are shared by its
// workers); in several it does not. Go keyed state is used in code, which
// lint does not see.
func (s *Set) checkStateScale(name string, fl *Flow, add func(kind Kind, name, field string, sev Severity, format string, args ...any)) {
	st := fl.Stream
	if st == nil || !fl.Enabled() {
		return
	}
	var windowed []string
	for _, step := range fl.Flows {
		if fn := s.Funcs[step.FName]; fn != nil && fn.Window != nil && !slices.Contains(windowed, step.FName) {
			windowed = append(windowed, step.FName)
		}
	}
	c := s.Conns[st.Source]
	if len(windowed) == 0 || c == nil || !slices.Contains(unpartitionedSources, c.Type) {
		return
	}
	fns := strings.Join(windowed, ", ")
	add(KindFlow, name, "stream.source", SevWarning,
		"flow %q: the windows of %s are state kept per process, and source %q (type %s) does not partition messages by key: run this flow in one process (any number of workers in it is fine). In several processes on one consumer group, durable consumer or queue, each process holds only the windows of the rows it received, emits them as if complete, and overwrites the saved state of the same keys; on a subscription that delivers every message to every process, each emits every window. A kafka source moves state with its partitions (README: State and scale-out)",
		name, fns, st.Source, c.Type)
}
