package runtime

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"time"

	"github.com/kisflow-go/kisflow/internal/state"
	"github.com/kisflow-go/kisflow/stream"
	"github.com/kisflow-go/kisflow/window"
)

// NoWatermark is the watermark before any event time was seen.
const NoWatermark = math.MinInt64

// DefaultIdleTimeout is how long a partition that delivers nothing keeps
// holding the watermark back (Config.IdleTimeout).
const DefaultIdleTimeout = 30 * time.Second

// watermarkID is the keyed-state entry that keeps a flow's watermark and
// the largest event time of each partition, committed with the position.
var watermarkID = state.ID{Name: "kisflow.watermark"}

// watermarks computes a flow's event-time watermark in read order: the
// largest event time of each partition (Message.Partition; messages with
// none are one partition), and the watermark, the least of those maxima
// over the partitions that delivered a message within the idle timeout
// (all of them when every one is idle), less the lateness. It never goes
// back. Only the read loop uses it.
type watermarks struct {
	field          *keyReader
	lateness, idle time.Duration
	parts          map[string]*partMark
	wm             int64
	untimed        *stream.Message // the first message whose time did not read, until reported
	reported       bool            // untimed was reported (see Runner.observe)
}

type partMark struct {
	max  int64
	seen time.Time // the last time it delivered a message with a time
}

// savedMarks is the watermark as kept in the state store.
type savedMarks struct {
	WM    int64            `json:"wm"`
	Parts map[string]int64 `json:"parts,omitempty"`
}

func newWatermarks(field string, lateness, idle time.Duration) *watermarks {
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	return &watermarks{field: newKeyReader(field), lateness: lateness, idle: idle, parts: map[string]*partMark{}, wm: NoWatermark}
}

// restore takes the watermark a run committed. Its partitions count as
// active from now: each holds the watermark back at most the idle timeout
// until it delivers again.
func (w *watermarks) restore(raw []byte, now time.Time) error {
	var s savedMarks
	if err := json.Unmarshal(raw, &s); err != nil {
		return err
	}
	w.wm = max(w.wm, s.WM)
	for p, m := range s.Parts {
		w.parts[p] = &partMark{max: m, seen: now}
	}
	return nil
}

// observe takes the event times of msgs, read at now.
func (w *watermarks) observe(msgs []*stream.Message, now time.Time) {
	for _, m := range msgs {
		t, ok := w.timeOf(m)
		if !ok {
			if !w.reported && w.untimed == nil {
				w.untimed = m
			}
			continue
		}
		pm := w.parts[m.Partition]
		if pm == nil {
			pm = &partMark{max: t}
			w.parts[m.Partition] = pm
		}
		pm.max = max(pm.max, t)
		pm.seen = now
	}
}

// current returns the watermark at now (idle partitions left out).
func (w *watermarks) current(now time.Time) int64 {
	least, most := int64(math.MaxInt64), int64(NoWatermark)
	active := false
	for _, pm := range w.parts {
		most = max(most, pm.max)
		if now.Sub(pm.seen) < w.idle {
			active = true
			least = min(least, pm.max)
		}
	}
	if !active {
		least = most
	}
	if least != NoWatermark {
		cand := least - w.lateness.Milliseconds()
		if least < math.MinInt64+w.lateness.Milliseconds() {
			cand = NoWatermark
		}
		w.wm = max(w.wm, cand)
	}
	return w.wm
}

// saved returns what the state store keeps of w.
func (w *watermarks) saved() savedMarks {
	s := savedMarks{WM: w.wm, Parts: make(map[string]int64, len(w.parts))}
	for p, pm := range w.parts {
		s.Parts[p] = pm.max
	}
	return s
}

// timeOf reads a message's event time; false when it has none that reads
// as a time (it does not move the watermark).
func (w *watermarks) timeOf(m *stream.Message) (int64, bool) {
	var v any
	switch p := m.Payload.(type) {
	case string:
		v = w.fromJSON([]byte(p))
	case []byte:
		v = w.fromJSON(p)
	case map[string]any:
		v = p[w.field.field]
	case map[string]string:
		if s, ok := p[w.field.field]; ok {
			v = s
		}
	default:
		rv := reflect.ValueOf(m.Payload)
		for rv.Kind() == reflect.Pointer && !rv.IsNil() {
			rv = rv.Elem()
		}
		if rv.Kind() == reflect.Struct {
			if idx := w.field.structField(rv.Type()); idx != nil {
				v = rv.FieldByIndex(idx).Interface()
			}
		}
	}
	if v == nil {
		return 0, false
	}
	t, err := window.EventTime(v)
	return t, err == nil
}

func (w *watermarks) fromJSON(data []byte) any {
	if w.field.path == nil {
		return nil
	}
	vals, err := w.field.path.Extract(data)
	if err != nil || len(vals) == 0 {
		return nil
	}
	// The path gives the value as written after the colon: `"ts": 1` and
	// `"ts":1` are the same field.
	raw := bytes.TrimSpace(vals[0])
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return nil
		}
		return s
	}
	if len(raw) == 0 || raw[0] == 'n' || raw[0] == 't' || raw[0] == 'f' || raw[0] == '{' || raw[0] == '[' {
		return nil
	}
	return json.Number(raw)
}

// clock is what a part's runs know of time: the watermark its rows are
// judged against (before its batch was read), and the one its timers fire
// at (after it).
type clock struct {
	before, after int64
}
