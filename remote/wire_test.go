package remote

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/driver/fields"
)

// TestCodecKeepsNumbersTyped: rows crossing the wire, as JSON text or as
// maps (a local calc before the remote step), both ways, read back as a
// local step's rows are: integers int64 (2^53+1 and the int64 bounds
// kept exactly), fractions float64, at every depth of nested objects and
// arrays.
func TestCodecKeepsNumbersTyped(t *testing.T) {
	t.Parallel()
	want := []map[string]any{
		{"id": int64(9007199254740993), "amount": int64(3), "price": 6.5, "user": "a"},
		{"min": int64(-9223372036854775808), "max": int64(9223372036854775807), "f": 1e-7, "big": 1e300},
		{"id": int64(9007199254740993), "o": map[string]any{"n": int64(-9007199254740995), "f": 0.25, "a": []any{int64(1), 2.5, map[string]any{"x": int64(7)}, []any{int64(9007199254740997)}}}, "nil": nil},
	}
	text := []any{
		[]byte(`{"id":9007199254740993,"amount":3,"price":6.5,"user":"a"}`),
		[]byte(`{"min":-9223372036854775808,"max":9223372036854775807,"f":1e-7,"big":1e300}`),
		[]byte(`{"id":9007199254740993,"o":{"n":-9007199254740995,"f":0.25,"a":[1,2.5,{"x":7},[9007199254740997]]},"nil":null}`),
	}
	maps := make([]any, len(want))
	for i, m := range want {
		maps[i] = m
	}
	for name, rows := range map[string][]any{"text": text, "maps": maps} {
		enc, err := encodeRows(rows, false)
		if err != nil {
			t.Fatal(err)
		}
		// A request (caller to provider) and a reply (provider to caller).
		for _, msg := range []framed{&request{Func: "F", Rows: enc}, &reply{Rows: enc}} {
			data, err := codec{}.Marshal(msg)
			if err != nil {
				t.Fatal(err)
			}
			got := reflect.New(reflect.TypeOf(msg).Elem()).Interface().(framed)
			if err := (codec{}).Unmarshal(data, got); err != nil {
				t.Fatal(err)
			}
			var in []any
			switch g := got.(type) {
			case *request:
				in = g.In
			case *reply:
				in = g.In
			}
			if len(in) != len(want) {
				t.Fatalf("%s %T: %d rows, want %d", name, msg, len(in), len(want))
			}
			for i, r := range in {
				m, err := fields.Of(r)
				if err != nil {
					t.Fatalf("%s %T row %d: %v", name, msg, i, err)
				}
				if !reflect.DeepEqual(m, want[i]) {
					t.Errorf("%s %T row %d (%s): read as %#v\nwant %#v", name, msg, i, r, m, want[i])
				}
			}
		}
	}
}

// TestADrainingProviderIsNotAFailure: callers keep calling two providers
// (a static list, which never drops one) while one of them drains; the
// calls racing its drain are refused as the drain's (or their streams end
// by it) and go to the other provider: no call fails, and the drained
// provider's breaker does not open (it opened with failures=3: the calls
// that found their idle streams ended opened new ones on its closed
// listener, each counted as a failure).
func TestADrainingProviderIsNotAFailure(t *testing.T) {
	t.Parallel()
	slow := func(ctx context.Context, rs []any) (*driver.Outcome, error) {
		time.Sleep(5 * time.Millisecond)
		return &driver.Outcome{Rows: rs}, nil
	}
	a, stopA := serveOn(t, &fakeEngine{fn: slow}, "127.0.0.1:0", 10*time.Second)
	b := provider(t, &fakeEngine{fn: slow})
	var logs bytes.Buffer
	var mu sync.Mutex
	c := client(t, Options{LoadBalance: RoundRobin, Retries: 1, Timeout: 5 * time.Second, Logger: slog.New(slog.NewTextHandler(&lockedBuffer{b: &logs, mu: &mu}, nil))}, a, b)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := c.Invoke(context.Background(), call(rows(fmt.Sprint(w, i)))); err != nil {
					t.Errorf("call failed: %v", err)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	if err, _ := stopA(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond)
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if out := logs.String(); strings.Contains(out, "breaker opens") || c.Open(a) {
		t.Fatalf("the drained provider's breaker opened: %s", out)
	}
}
