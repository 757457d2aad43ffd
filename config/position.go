package config

import (
	"fmt"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/kisflow-go/kisflow/internal/suggest"
)

// Kinds of a stream's start and stop positions (Bound.Kind).
const (
	// BoundCommitted starts at the flow's committed position (the default).
	BoundCommitted = "committed"
	// BoundEarliest starts at the oldest message the source holds.
	BoundEarliest = "earliest"
	// BoundLatest starts after the newest message the source holds.
	BoundLatest = "latest"
	// BoundAtStart stops at what the source held when the run began.
	BoundAtStart = "at_start"
	// BoundPosition starts or stops at a position of the source's own
	// form (Bound.Position).
	BoundPosition = "position"
	// BoundTime starts or stops at the first message at or after a time
	// (Bound.Time).
	BoundTime = "time"
)

// Bound is a stream's start or stop position, written in YAML as one of
// the words earliest, latest, committed, at_start, or as a mapping
// {position: P} or {time: T} (T in RFC 3339, or a date 2006-01-02 taken
// as midnight UTC).
type Bound struct {
	// Kind is one of the Bound* constants; "" when the value was not
	// understood (Bad says why).
	Kind string `yaml:"-"`
	// Position is the position of a {position: P} bound, in the source's
	// own form (a file's byte offset, Kafka's PARTITION:OFFSET list).
	Position string `yaml:"position,omitempty"`
	// Time is the time of a {time: T} bound, as written.
	Time string `yaml:"time,omitempty"`
	// Bad says why the value is not a bound, for lint.
	Bad string `yaml:"-"`
	// Word is a word that is not a bound ("earlist"), for lint's "did
	// you mean"; "" otherwise.
	Word string `yaml:"-"`
}

// notABound is Bad for a value that is neither a word nor a mapping.
const notABound = "not a position"

// wantBound lists what a start or a stop (key) may be, and with a word
// that is none of them the one it is likely a misspelling of.
func wantBound(key, word string) string {
	words := []string{BoundEarliest, BoundLatest, BoundCommitted}
	if key == "stop" {
		words = []string{BoundAtStart}
	}
	out := " (want " + strings.Join(words, ", ") + ", {position: P} or {time: T}"
	if key == "stop" {
		out += "; leave stop out for an unbounded run"
	}
	out += ")"
	best, bestD := "", 3
	for _, w := range words {
		if d := suggest.Distance(strings.ToLower(word), w); d < bestD {
			best, bestD = w, d
		}
	}
	if word != "" && best != "" {
		out += fmt.Sprintf("; did you mean %s?", best)
	}
	return out
}

// UnmarshalYAML reads a word or a {position: P} / {time: T} mapping. What
// it does not understand is kept in Bad and reported by lint with its line.
func (b *Bound) UnmarshalYAML(n *yaml.Node) error {
	*b = Bound{}
	switch n.Kind {
	case yaml.ScalarNode:
		switch v := strings.TrimSpace(n.Value); v {
		case BoundCommitted, BoundEarliest, BoundLatest, BoundAtStart:
			b.Kind = v
		default:
			b.Bad, b.Word = fmt.Sprintf("%q is not a position", n.Value), v
		}
	case yaml.MappingNode:
		if len(n.Content) != 2 {
			b.Bad = "want one of {position: P} or {time: T}"
			return nil
		}
		key, val := n.Content[0].Value, n.Content[1]
		if val.Kind != yaml.ScalarNode || strings.TrimSpace(val.Value) == "" {
			b.Bad = fmt.Sprintf("%s needs a value", key)
			return nil
		}
		switch key {
		case BoundPosition:
			b.Kind, b.Position = BoundPosition, strings.TrimSpace(val.Value)
		case BoundTime:
			b.Kind, b.Time = BoundTime, strings.TrimSpace(val.Value)
			if _, err := ParseBoundTime(b.Time); err != nil {
				b.Kind, b.Bad = "", err.Error()
			}
		default:
			b.Bad = fmt.Sprintf("unknown key %q (want {position: P} or {time: T})", key)
		}
	default:
		b.Bad = notABound
	}
	return nil
}

// MarshalYAML writes the bound as it is read.
func (b Bound) MarshalYAML() (any, error) {
	switch b.Kind {
	case BoundPosition:
		return map[string]string{"position": b.Position}, nil
	case BoundTime:
		return map[string]string{"time": b.Time}, nil
	}
	return b.Kind, nil
}

// String is the bound as written in YAML.
func (b Bound) String() string {
	switch b.Kind {
	case BoundPosition:
		return "{position: " + b.Position + "}"
	case BoundTime:
		return "{time: " + b.Time + "}"
	}
	return b.Kind
}

// ParseBoundTime reads the time of a {time: T} bound (or of kisflow's
// --time flags): RFC 3339 (2026-11-30T18:00:00Z), or a date (2026-11-30,
// midnight UTC).
func ParseBoundTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("bad time %q (want RFC 3339, such as 2026-11-30T18:00:00Z, or a date such as 2026-11-30)", s)
}

// checkBounds lints a stream's start and stop: the words each may be
// (what a source can do is checked by the registry, which knows it).
func checkBounds(name string, st *Stream, add func(kind Kind, name, field string, sev Severity, format string, args ...any)) {
	if b := st.Start; b != nil {
		switch {
		case b.Bad != "" && (b.Word != "" || b.Bad == notABound):
			add(KindFlow, name, "stream.start", SevError, "flow %q: stream start: %s%s", name, b.Bad, wantBound("start", b.Word))
		case b.Bad != "":
			add(KindFlow, name, "stream.start", SevError, "flow %q: stream start: %s", name, b.Bad)
		case b.Kind == BoundAtStart:
			add(KindFlow, name, "stream.start", SevError, "flow %q: stream start at_start is a stop position (want earliest, latest, committed, {position: P} or {time: T})", name)
		}
	}
	if b := st.Stop; b != nil {
		switch {
		case b.Bad != "" && (b.Word != "" || b.Bad == notABound):
			add(KindFlow, name, "stream.stop", SevError, "flow %q: stream stop: %s%s", name, b.Bad, wantBound("stop", b.Word))
		case b.Bad != "":
			add(KindFlow, name, "stream.stop", SevError, "flow %q: stream stop: %s", name, b.Bad)
		case b.Kind == BoundEarliest || b.Kind == BoundLatest || b.Kind == BoundCommitted:
			add(KindFlow, name, "stream.stop", SevError, "flow %q: stream stop %s is a start position (want at_start, {position: P} or {time: T})", name, b.Kind)
		}
	}
}
