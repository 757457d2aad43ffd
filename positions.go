package kisflow

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/stream"
)

// BoundOf turns a stream block's start or stop into the runtime's form
// (the zero Bound for nil or committed).
func BoundOf(b *config.Bound) (stream.Bound, error) {
	if b == nil || b.Kind == "" || b.Kind == config.BoundCommitted {
		if b != nil && b.Bad != "" {
			return stream.Bound{}, fmt.Errorf("%s", b.Bad)
		}
		return stream.Bound{}, nil
	}
	out := stream.Bound{Kind: stream.BoundKind(b.Kind), Position: b.Position}
	if b.Kind == config.BoundTime {
		t, err := config.ParseBoundTime(b.Time)
		if err != nil {
			return stream.Bound{}, err
		}
		out.Time = t
	}
	return out, nil
}

// checkBounds refuses, at lint, a start or stop position the flow's
// source cannot do, saying what it can do.
func (r *Registry) checkBounds(s *config.Set) []config.Problem {
	var probs []config.Problem
	for _, name := range slices.Sorted(maps.Keys(s.Flows)) {
		st := s.Flows[name].Stream
		if st == nil || s.Conns[st.Source] == nil {
			continue
		}
		start, err1 := BoundOf(st.Start)
		stop, err2 := BoundOf(st.Stop)
		if err1 != nil || err2 != nil || (start.IsZero() && stop.IsZero()) {
			continue // reported by the config's own check, or nothing to check
		}
		c := s.Conns[st.Source]
		d := r.lintDriver(s, st.Source)
		if d == nil {
			continue // no driver here, or a config checkConns reports
		}
		sk, ok := d.(stream.Seeker)
		if !ok {
			field := "stream.start"
			if start.IsZero() {
				field = "stream.stop"
			}
			probs = append(probs, config.Problem{Pos: s.Pos(config.KindFlow, name, field), Severity: config.SevError,
				Msg: fmt.Sprintf("flow %q: source %q (type %s) has no start or stop positions: remove stream.start and stream.stop", name, st.Source, c.Type)})
			continue
		}
		can := sk.Seeks()
		if !can.CanStart(start.Kind) {
			probs = append(probs, config.Problem{Pos: s.Pos(config.KindFlow, name, "stream.start"), Severity: config.SevError,
				Msg: fmt.Sprintf("flow %q: source %q (type %s) cannot start at %s (it can do %s)", name, st.Source, c.Type, start.Kind, can.Describe())})
		}
		if !can.CanStop(stop.Kind) {
			probs = append(probs, config.Problem{Pos: s.Pos(config.KindFlow, name, "stream.stop"), Severity: config.SevError,
				Msg: fmt.Sprintf("flow %q: source %q (type %s) cannot stop at %s (it can do %s)", name, st.Source, c.Type, stop.Kind, can.Describe())})
		}
		startErr, stopErr := can.CheckBounds(start, stop)
		if startErr != nil {
			probs = append(probs, config.Problem{Pos: s.Pos(config.KindFlow, name, "stream.start"), Severity: config.SevError,
				Msg: fmt.Sprintf("flow %q: source %q (type %s): stream.start: %v", name, st.Source, c.Type, startErr)})
		}
		if stopErr != nil {
			probs = append(probs, config.Problem{Pos: s.Pos(config.KindFlow, name, "stream.stop"), Severity: config.SevError,
				Msg: fmt.Sprintf("flow %q: source %q (type %s): stream.stop: %v", name, st.Source, c.Type, stopErr)})
		}
	}
	return probs
}

// cdcSource reports whether connector type typ is a change data capture
// source (its rows carry _op and _table).
func cdcSource(typ string) bool { return typ == "postgres_cdc" || typ == "mysql_cdc" }

// checkApplyTables refuses, at lint, a CDC source of several tables into
// one sink in mode apply: the changes of every table would be applied to
// the sink's one table. The sink's params.other_tables: skip says that
// only its own table's changes are applied (the run ends on another
// table's change otherwise).
func checkApplyTables(s *config.Set) []config.Problem {
	var probs []config.Problem
	for _, name := range slices.Sorted(maps.Keys(s.Flows)) {
		st := s.Flows[name].Stream
		if st == nil || s.Conns[st.Source] == nil || s.Conns[st.Sink] == nil {
			continue
		}
		src, sink := s.Conns[st.Source], s.Conns[st.Sink]
		if !cdcSource(src.Type) || !strings.Contains(src.Key, ",") || sink.Params["mode"] != "apply" || sink.Params["source_table"] != "" {
			continue
		}
		probs = append(probs, config.Problem{Pos: s.Pos(config.KindFlow, name, "stream.sink"), Severity: config.SevError,
			Msg: fmt.Sprintf("flow %q: source %q (type %s) captures several tables (%s) and sink %q (mode apply) applies changes to its one table %s: every table's changes would be applied to it. Set params.source_table on sink %q to the table whose changes it applies (the others are left out), and give each other table its own flow and sink", name, st.Source, src.Type, src.Key, st.Sink, sink.Key, st.Sink)})
	}
	return probs
}
