package runtime

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/stream"
)

func msg(part string, payload string) *stream.Message {
	return &stream.Message{Partition: part, Payload: payload}
}

// TestWatermarkMinOverPartitionsWithBoundedIdleness: the watermark is the
// least of the partitions' largest event times, less the lateness; a
// partition idle for the idle timeout stops holding it back; it never
// goes back; a restored one goes on from where it was.
func TestWatermarkMinOverPartitionsWithBoundedIdleness(t *testing.T) {
	w := newWatermarks("ts", 10*time.Millisecond, time.Second)
	t0 := time.Unix(1000, 0)
	if got := w.current(t0); got != NoWatermark {
		t.Fatalf("before any event time: %d", got)
	}
	w.observe([]*stream.Message{msg("a", `{"ts":1000}`), msg("b", `{"ts":"1970-01-01T00:00:00.400Z"}`), msg("a", `{"ts":900}`)}, t0)
	if got := w.current(t0); got != 390 {
		t.Fatalf("min over a (1000) and b (400) less 10ms: got %d, want 390", got)
	}
	// a moves on; b is quiet but not yet idle.
	w.observe([]*stream.Message{msg("a", `{"ts":5000}`)}, t0.Add(500*time.Millisecond))
	if got := w.current(t0.Add(900 * time.Millisecond)); got != 390 {
		t.Fatalf("b within its idle timeout holds the watermark: got %d, want 390", got)
	}
	// b idle for the timeout: a alone.
	if got := w.current(t0.Add(1100 * time.Millisecond)); got != 4990 {
		t.Fatalf("b idle: got %d, want 4990", got)
	}
	// b comes back behind: the watermark does not go back.
	w.observe([]*stream.Message{msg("b", `{"ts":600}`)}, t0.Add(1200*time.Millisecond))
	if got := w.current(t0.Add(1200 * time.Millisecond)); got != 4990 {
		t.Fatalf("never back: got %d, want 4990", got)
	}
	// Every partition idle: the largest of all.
	w.observe([]*stream.Message{msg("b", `{"ts":7000}`)}, t0.Add(1300*time.Millisecond))
	if got := w.current(t0.Add(time.Hour)); got != 6990 {
		t.Fatalf("all idle: got %d, want 6990", got)
	}
	// No time field, or one that is not a time: no effect. A message
	// without a partition is a partition of its own ("").
	w.observe([]*stream.Message{msg("a", `{"x":1}`), msg("a", `{"ts":"soon"}`), msg("", `{"ts":100}`)}, t0.Add(time.Hour))
	if got := w.current(t0.Add(time.Hour)); got != 6990 {
		t.Fatalf("after rows without a readable time: got %d, want 6990", got)
	}
	// Restored, it goes on from the saved watermark and maxima.
	saved := w.saved()
	r := newWatermarks("ts", 10*time.Millisecond, time.Second)
	b, _ := json.Marshal(saved)
	if err := r.restore(b, t0); err != nil {
		t.Fatal(err)
	}
	if got := r.current(t0); got != 6990 {
		t.Fatalf("restored: got %d, want 6990", got)
	}
	// Payloads other than JSON text: maps and structs.
	type ev struct {
		TS int64 `json:"ts"`
	}
	r.observe([]*stream.Message{{Payload: map[string]any{"ts": int64(9000)}}, {Partition: "a", Payload: &ev{TS: 9500}}, {Partition: "b", Payload: ev{TS: 9200}}}, t0.Add(2*time.Hour))
	if got := r.current(t0.Add(2 * time.Hour)); got != 8990 {
		t.Fatalf("maps and structs: got %d, want 8990", got)
	}
}

// TestUntimedMessagesAreLoggedOnce: a message whose time field does not
// read leaves the watermark where it is; the first one is logged, once.
func TestUntimedMessagesAreLoggedOnce(t *testing.T) {
	t.Parallel()
	var log strings.Builder
	var logMu sync.Mutex
	r, err := New(Config{Name: "s", BatchSize: 2, TimeField: "ts",
		Logger: slog.New(slog.NewTextHandler(&lockedBuilder{b: &log, mu: &logMu}, nil))},
		Parts{Source: newSource(6, 0), NewFlow: func(int) Flow { return funcFlow(passAll) }, Sink: &memSink{}, DeadLetter: &memSink{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	logMu.Lock()
	defer logMu.Unlock()
	if n := strings.Count(log.String(), `time field \"ts\" does not read as a time`); n != 1 {
		t.Fatalf("logged %d times, want 1:\n%s", n, log.String())
	}
}

// A time field reads whatever the JSON's layout: spaces or tabs after the
// colon (what Python's json.dumps writes) and before the comma.
func TestTimeFieldReadsSpacedJSON(t *testing.T) {
	w := newWatermarks("ts", 0, time.Second)
	for _, row := range []string{
		`{"ts": 1777636800000, "u": 1}`,
		`{"ts":	"2026-05-01T12:00:00Z" , "u": 1}`,
		`{ "ts" :1777636800000 }`,
		`{"ts":1777636800000}`,
	} {
		if _, ok := w.timeOf(&stream.Message{Payload: []byte(row)}); !ok {
			t.Errorf("%s: the time field does not read", row)
		}
	}
}
