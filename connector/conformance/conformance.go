// Package conformance is the test suite every streaming connector passes
// against the real system: open and close, send and receive a batch,
// at-least-once across a consumer restart, order per key where promised,
// consumers of one group sharing the work, the lag the source reports
// (when it implements stream.Lagger), and surviving an interruption.
//
// A connector's test calls Run with a Harness that makes a fresh stream
// (topic, subject, queue, key) for each case:
//
//	func TestConformance(t *testing.T) {
//		conformance.Run(t, conformance.Harness{New: newFixture, Features: ...})
//	}
package conformance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/stream"
)

// Fixture is one fresh stream of the system under test.
type Fixture struct {
	// Sink writes rows to the stream.
	Sink stream.Sink
	// Open opens a consumer of the stream. Consumers with the same group
	// share its messages and acknowledgements.
	Open func(ctx context.Context, group string) (stream.Source, error)
	// Interrupt, when set, cuts this fixture's connections (or restarts
	// its service) in the middle of a stream; it takes precedence over
	// Features.Interrupt, for interruptions that belong to one fixture.
	Interrupt func(t *testing.T)
}

// Features says what the system promises; cases for promises it does not
// make are skipped.
type Features struct {
	// Redelivery: messages a consumer read but did not acknowledge come
	// back to the next consumer of its group.
	Redelivery bool
	// SharedGroup: consumers of one group split the messages between them.
	SharedGroup bool
	// OrderPerKey: rows with the same "key" field arrive in write order.
	OrderPerKey bool
	// Interrupt, when set, cuts the consumer's connection (or restarts the
	// service) in the middle of a stream.
	Interrupt func(t *testing.T)
	// Wait bounds how long a case waits for messages (default 20s).
	Wait time.Duration
}

// Harness describes the connector under test.
type Harness struct {
	Features
	// New makes a fresh fixture for one case and registers its cleanup.
	New func(t *testing.T) Fixture
}

// Run runs every case.
func Run(t *testing.T, h Harness) {
	if h.Wait == 0 {
		h.Wait = 20 * time.Second
	}
	t.Run("OpenClose", func(t *testing.T) { t.Parallel(); openClose(t, h) })
	t.Run("SendReceive", func(t *testing.T) { t.Parallel(); sendReceive(t, h) })
	t.Run("AtLeastOnceAcrossRestart", func(t *testing.T) {
		if !h.Redelivery {
			t.Skip("the connector does not promise redelivery")
		}
		t.Parallel()
		atLeastOnce(t, h)
	})
	t.Run("OrderPerKey", func(t *testing.T) {
		if !h.OrderPerKey {
			t.Skip("the connector does not promise order per key")
		}
		t.Parallel()
		orderPerKey(t, h)
	})
	t.Run("SharedGroup", func(t *testing.T) {
		if !h.SharedGroup {
			t.Skip("the connector has no consumer groups")
		}
		t.Parallel()
		sharedGroup(t, h)
	})
	t.Run("Lag", func(t *testing.T) { t.Parallel(); lag(t, h) })
	t.Run("Interrupted", func(t *testing.T) { interrupted(t, h) })
	t.Run("UnencodableRowIsPermanent", func(t *testing.T) { t.Parallel(); unencodableRow(t, h) })
}

// unencodableRow: a row holding a value the sink cannot encode (a float
// +Inf, which JSON has no text for) is refused with an error marked
// stream.Permanent, so that the runtime dead-letters that row instead of
// retrying its batch forever; a sink that stores the value may take it.
func unencodableRow(t *testing.T, h Harness) {
	f := h.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := f.Sink.Write(ctx, []any{map[string]any{"id": 1, "key": "k0", "ratio": math.Inf(1)}})
	if err != nil && !stream.IsPermanent(err) {
		t.Fatalf("a row holding +Inf: error %v, want one marked stream.Permanent", err)
	}
}

// Row is what the suite writes: an id and a key.
type Row struct {
	ID  int    `json:"id"`
	Key string `json:"key"`
}

func rows(from, to, keys int) []any {
	out := make([]any, 0, to-from+1)
	for i := from; i <= to; i++ {
		out = append(out, map[string]any{"id": i, "key": fmt.Sprintf("k%d", i%keys)})
	}
	return out
}

// Decode reads a suite row back from a message payload.
func Decode(m *stream.Message) (Row, error) {
	var r Row
	var data []byte
	switch p := m.Payload.(type) {
	case []byte:
		data = p
	case string:
		data = []byte(p)
	case map[string]any:
		var err error
		if data, err = json.Marshal(p); err != nil {
			return r, err
		}
	default:
		return r, fmt.Errorf("payload of type %T", m.Payload)
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("payload %q: %w", data, err)
	}
	return r, nil
}

func write(t *testing.T, f Fixture, rs []any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := f.Sink.Write(ctx, rs); err != nil {
		t.Fatalf("sink write: %v", err)
	}
}

func open(t *testing.T, f Fixture, group string) stream.Source {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	src, err := f.Open(ctx, group)
	if err != nil {
		t.Fatalf("open source: %v", err)
	}
	return src
}

func closeSource(t *testing.T, src stream.Source) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := src.Close(ctx); err != nil {
		t.Errorf("close source: %v", err)
	}
}

// readUntil reads (acknowledging when ack is set) until done says so or
// the wait runs out, and returns every message read in order.
func readUntil(t *testing.T, src stream.Source, wait time.Duration, ack bool, done func([]Row) bool) ([]*stream.Message, []Row) {
	t.Helper()
	deadline := time.Now().Add(wait)
	var msgs []*stream.Message
	var got []Row
	for !done(got) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v with %d messages", wait, len(got))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		batch, err := src.Read(ctx, 50)
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
			t.Fatalf("read: %v", err)
		}
		for _, m := range batch {
			r, err := Decode(m)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, r)
		}
		msgs = append(msgs, batch...)
		if ack && len(batch) > 0 {
			if err := src.Ack(context.Background(), batch); err != nil {
				t.Fatalf("ack: %v", err)
			}
		}
	}
	return msgs, got
}

func ids(rs []Row) []int {
	out := make([]int, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

// missing lists the ids from..to that rs lacks.
func missing(rs []Row, from, to int) []int {
	seen := map[int]bool{}
	for _, r := range rs {
		seen[r.ID] = true
	}
	var out []int
	for i := from; i <= to; i++ {
		if !seen[i] {
			out = append(out, i)
		}
	}
	return out
}

func covers(rs []Row, from, to int) bool {
	seen := map[int]bool{}
	for _, r := range rs {
		seen[r.ID] = true
	}
	for i := from; i <= to; i++ {
		if !seen[i] {
			return false
		}
	}
	return true
}

func openClose(t *testing.T, h Harness) {
	f := h.New(t)
	src := open(t, f, "g")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	msgs, err := src.Read(ctx, 10)
	if len(msgs) != 0 {
		t.Fatalf("an empty stream gave %d messages", len(msgs))
	}
	if err == nil || (!errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled)) {
		t.Fatalf("read on an empty stream must wait for ctx, got %v", err)
	}
	closeSource(t, src)
}

func sendReceive(t *testing.T, h Harness) {
	f := h.New(t)
	src := open(t, f, "g")
	defer closeSource(t, src)
	write(t, f, rows(1, 100, 4))
	_, got := readUntil(t, src, h.Wait, true, func(rs []Row) bool { return covers(rs, 1, 100) })
	if len(got) != 100 {
		t.Errorf("read %d messages for 100 rows written", len(got))
	}
}

func atLeastOnce(t *testing.T, h Harness) {
	f := h.New(t)
	// The consumer exists before the write: MQTT keeps messages only for
	// sessions that subscribed.
	a := open(t, f, "g")
	// 16 messages: brokers bound what a consumer may hold unacknowledged
	// (Mosquitto allows 20 in flight).
	write(t, f, rows(1, 16, 4))
	msgs, got := readUntil(t, a, h.Wait, false, func(rs []Row) bool { return covers(rs, 1, 16) })
	// Acknowledge the first half, in read order, and drop the rest.
	half := 0
	for half < len(got) && got[half].ID <= 8 {
		half++
	}
	if err := a.Ack(context.Background(), msgs[:half]); err != nil {
		t.Fatal(err)
	}
	closeSource(t, a)
	unacked := ids(got[half:])

	b := open(t, f, "g")
	defer closeSource(t, b)
	_, again := readUntil(t, b, h.Wait, true, func(rs []Row) bool {
		seen := map[int]bool{}
		for _, r := range rs {
			seen[r.ID] = true
		}
		for _, id := range unacked {
			if !seen[id] {
				return false
			}
		}
		return true
	})
	for _, r := range again {
		if slices.Contains(ids(got[:half]), r.ID) {
			t.Errorf("acknowledged message %d came back", r.ID)
		}
	}
}

// lag checks a stream.Lagger source's count: written messages stay in it
// until acknowledged, whether read or not.
func lag(t *testing.T, h Harness) {
	f := h.New(t)
	src := open(t, f, "g")
	defer closeSource(t, src)
	l, ok := src.(stream.Lagger)
	if !ok {
		t.Skip("the source does not report lag")
	}
	write(t, f, rows(1, 30, 3))
	msgs, _ := readUntil(t, src, h.Wait, false, func(rs []Row) bool { return covers(rs, 1, 30) })
	lagBecomes(t, l, 30, h.Wait) // read, not acknowledged
	if err := src.Ack(context.Background(), msgs[:10]); err != nil {
		t.Fatal(err)
	}
	lagBecomes(t, l, int64(len(msgs)-10), h.Wait)
	if err := src.Ack(context.Background(), msgs[10:]); err != nil {
		t.Fatal(err)
	}
	lagBecomes(t, l, 0, h.Wait)
}

// lagBecomes waits for the source to report want (servers update their
// counts asynchronously).
func lagBecomes(t *testing.T, l stream.Lagger, want int64, wait time.Duration) {
	t.Helper()
	deadline := time.Now().Add(wait)
	var got int64
	var err error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		got, err = l.Lag(ctx)
		cancel()
		if err == nil && got == want {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("lag: want %d, last got %d (err %v) after %v", want, got, err, wait)
}

func orderPerKey(t *testing.T, h Harness) {
	f := h.New(t)
	src := open(t, f, "g")
	defer closeSource(t, src)
	for i := 0; i < 4; i++ { // several writes, so order spans batches
		write(t, f, rows(i*50+1, i*50+50, 4))
	}
	_, got := readUntil(t, src, h.Wait, true, func(rs []Row) bool { return covers(rs, 1, 200) })
	last := map[string]int{}
	for _, r := range got {
		if r.ID < last[r.Key] {
			t.Fatalf("key %s: %d after %d", r.Key, r.ID, last[r.Key])
		}
		last[r.Key] = r.ID
	}
}

func sharedGroup(t *testing.T, h Harness) {
	f := h.New(t)
	a, b := open(t, f, "g"), open(t, f, "g")
	defer closeSource(t, a)
	defer closeSource(t, b)
	// Written in chunks while both read: consumers may join their group
	// asynchronously (Kafka), and the work is shared from then on.
	go func() {
		for i := 0; i < 10; i++ {
			write(t, f, rows(i*20+1, i*20+20, 200)) // a key per row: spread over every partition
			time.Sleep(100 * time.Millisecond)
		}
	}()
	var mu sync.Mutex
	var all []Row
	counts := [2]int{}
	ctx, cancel := context.WithTimeout(context.Background(), h.Wait)
	defer cancel()
	var wg sync.WaitGroup
	for i, src := range []stream.Source{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				rctx, rcancel := context.WithTimeout(ctx, 300*time.Millisecond)
				batch, _ := src.Read(rctx, 10)
				rcancel()
				if len(batch) == 0 {
					continue
				}
				_ = src.Ack(context.Background(), batch)
				mu.Lock()
				for _, m := range batch {
					if r, err := Decode(m); err == nil {
						all = append(all, r)
					}
				}
				counts[i] += len(batch)
				done := covers(all, 1, 200)
				mu.Unlock()
				if done {
					cancel()
				}
			}
		}()
	}
	wg.Wait()
	if !covers(all, 1, 200) {
		t.Fatalf("two consumers read %d of 200 messages", len(all))
	}
	if counts[0] == 0 || counts[1] == 0 {
		t.Errorf("the work was not shared: %v", counts)
	}
}

func interrupted(t *testing.T, h Harness) {
	f := h.New(t)
	interrupt := f.Interrupt
	if interrupt == nil {
		interrupt = h.Interrupt
	}
	if interrupt == nil {
		t.Skip("the harness cannot interrupt the connection")
	}
	src := open(t, f, "g")
	write(t, f, rows(1, 50, 4))
	_, first := readUntil(t, src, h.Wait, true, func(rs []Row) bool { return covers(rs, 1, 50) })
	// Rows 51-75 are in the system, not yet read, when it is interrupted:
	// they must survive it (a restarted service keeps what it stored).
	write(t, f, rows(51, 75, 4))
	interrupt(t)
	// The writer and the reader may see errors while the service is away;
	// the sink is retried, the source reopened, as the runtime does.
	deadline := time.Now().Add(h.Wait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := f.Sink.Write(ctx, rows(76, 100, 4))
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sink did not recover: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var got []Row
	for !covers(append(first, got...), 1, 100) {
		if time.Now().After(deadline) {
			t.Fatalf("after the interruption read %d messages, missing %v", len(got), missing(append(first, got...), 1, 100))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		batch, err := src.Read(ctx, 50)
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			closeSource(t, src)
			src = open(t, f, "g")
			continue
		}
		for _, m := range batch {
			if r, err := Decode(m); err == nil {
				got = append(got, r)
			}
		}
		_ = src.Ack(context.Background(), batch)
	}
	closeSource(t, src)
}
