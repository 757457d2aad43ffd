package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/internal/flatjson"
)

// totals sums what a run emitted: window rows, the orders they count and
// their revenue, to check that two computations agree.
type totals struct {
	windows int
	orders  int64
	revenue float64
}

func (t totals) check(want totals) error {
	if t.windows != want.windows || t.orders != want.orders {
		return fmt.Errorf("%d windows of %d orders, want %d of %d", t.windows, t.orders, want.windows, want.orders)
	}
	if d := t.revenue - want.revenue; d > 1e-6*want.revenue || -d > 1e-6*want.revenue {
		return fmt.Errorf("revenue %f, want %f", t.revenue, want.revenue)
	}
	return nil
}

// expected is what the input yields.
func expected() totals {
	// Event i has amount (i%1000) + (i%100)/100; the sum of i%1000 over
	// whole thousands, of (i%100)/100 over whole hundreds.
	var rev float64
	for i := range 1000 {
		rev += float64(i) + float64(i%100)/100
	}
	return totals{windows: windows(), orders: int64(rows), revenue: rev * float64(rows/1000)}
}

// emitter writes a closed window's rows as JSON lines, as the file sink of
// the kisflow run does, and sums them.
type emitter struct {
	w   *bufio.Writer
	buf []byte
	t   totals
}

func newEmitter(f io.Writer) *emitter { return &emitter{w: bufio.NewWriterSize(f, 256<<10)} }

func (e *emitter) emit(user, start, orders int64, revenue float64) {
	b := append(e.buf[:0], `{"orders":`...)
	b = strconv.AppendInt(b, orders, 10)
	b = append(b, `,"revenue":`...)
	b = strconv.AppendFloat(b, revenue, 'g', -1, 64)
	b = append(b, `,"user_id":`...)
	b = strconv.AppendInt(b, user, 10)
	b = append(b, `,"window_end":"`...)
	b = time.UnixMilli(start+60_000).UTC().AppendFormat(b, time.RFC3339)
	b = append(b, `","window_start":"`...)
	b = time.UnixMilli(start).UTC().AppendFormat(b, time.RFC3339)
	b = append(b, "\"}\n"...)
	e.buf = b
	_, _ = e.w.Write(b)
	e.t.windows++
	e.t.orders += orders
	e.t.revenue += revenue
}

// decoderLoop is loop (a), the hand-written loop of issue 13's figure: the
// events file read line by line (bufio, as the file source reads it),
// each line decoded with the decoder kisflow uses for flat JSON rows
// (internal/flatjson, into one reused map, as the window function does),
// count and sum updated in a map of user to aggregate for the current
// minute, and each minute's rows written as JSON lines when the next minute
// starts. It relies on the input being in event-time order; the window
// function does not.
func decoderLoop(path, out string) (totals, error) {
	type agg struct {
		n   int64
		sum float64
	}
	f, err := os.Open(path)
	if err != nil {
		return totals{}, err
	}
	defer f.Close()
	o, err := os.Create(out)
	if err != nil {
		return totals{}, err
	}
	defer o.Close()
	e := newEmitter(o)
	r := bufio.NewReaderSize(f, 256<<10)
	var dec flatjson.Decoder
	row := make(map[string]any, 8)
	m := make(map[int64]agg, users)
	minute := int64(-1)
	flush := func() {
		for u, a := range m {
			e.emit(u, minute, a.n, a.sum)
		}
		clear(m)
	}
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, io.EOF) && len(line) == 0 {
			break
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return totals{}, err
		}
		if !dec.DecodeInto(row, line) {
			return totals{}, fmt.Errorf("not flat JSON: %q", line)
		}
		ts, ok1 := row["ts"].(int64)
		user, ok2 := row["user_id"].(int64)
		var amount float64
		switch v := row["amount"].(type) {
		case float64:
			amount = v
		case int64:
			amount = float64(v)
		default:
			ok2 = false
		}
		if !ok1 || !ok2 {
			return totals{}, fmt.Errorf("bad event %q", line)
		}
		if start := ts - ts%60_000; start != minute {
			flush()
			minute = start
		}
		a := m[user]
		a.n++
		a.sum += amount
		m[user] = a
	}
	flush()
	return e.t, e.w.Flush()
}

// fastLoop is loop (b), the fastest single-goroutine loop written for the
// same work: the file read in 1 MiB chunks, each line scanned by hand for
// its three fields (in any order; numbers parsed in place, the amount
// exactly as strconv.ParseFloat would for up to 15 digits), the groups of
// the current minute found through a map of user to an index into a slice
// of aggregates, and each minute's rows written as loop (a) writes them.
func fastLoop(path, out string) (totals, error) {
	type agg struct {
		user, n int64
		sum     float64
	}
	f, err := os.Open(path)
	if err != nil {
		return totals{}, err
	}
	defer f.Close()
	o, err := os.Create(out)
	if err != nil {
		return totals{}, err
	}
	defer o.Close()
	e := newEmitter(o)
	idx := make(map[int64]int32, users)
	aggs := make([]agg, 0, users)
	minute := int64(-1)
	flush := func() {
		for _, a := range aggs {
			e.emit(a.user, minute, a.n, a.sum)
		}
		clear(idx)
		aggs = aggs[:0]
	}
	buf := make([]byte, 1<<20)
	have := 0
	for {
		n, rerr := f.Read(buf[have:])
		have += n
		data := buf[:have]
		for {
			nl := bytes.IndexByte(data, '\n')
			if nl < 0 {
				break
			}
			ts, user, amount, ok := scanEvent(data[:nl])
			if !ok {
				return totals{}, fmt.Errorf("bad event %q", data[:nl])
			}
			data = data[nl+1:]
			if start := ts - ts%60_000; start != minute {
				flush()
				minute = start
			}
			i, ok := idx[user]
			if !ok {
				i = int32(len(aggs))
				idx[user] = i
				aggs = append(aggs, agg{user: user})
			}
			a := &aggs[i]
			a.n++
			a.sum += amount
		}
		have = copy(buf, data)
		if rerr == io.EOF {
			if have > 0 {
				return totals{}, fmt.Errorf("last line without a newline: %q", buf[:have])
			}
			break
		}
		if rerr != nil {
			return totals{}, rerr
		}
	}
	flush()
	return e.t, e.w.Flush()
}

var pow10 = [...]float64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15}

// scanEvent reads ts, user_id and amount from a line {"k":v,...} with
// numeric values and no spaces.
func scanEvent(b []byte) (ts, user int64, amount float64, ok bool) {
	var got int
	i := 1
	for i < len(b) && b[i] == '"' {
		j := i + 1
		for j < len(b) && b[j] != '"' {
			j++
		}
		key := b[i+1 : j]
		i = j + 2 // past `":`
		neg := i < len(b) && b[i] == '-'
		if neg {
			i++
		}
		var mant int64
		digits, frac := 0, -1
		for ; i < len(b); i++ {
			c := b[i]
			if c >= '0' && c <= '9' {
				mant = mant*10 + int64(c-'0')
				digits++
			} else if c == '.' && frac < 0 {
				frac = digits
			} else {
				break
			}
		}
		if neg {
			mant = -mant
		}
		switch string(key) {
		case "ts":
			ts, got = mant, got|1
		case "user_id":
			user, got = mant, got|2
		case "amount":
			if frac < 0 {
				amount = float64(mant)
			} else if digits <= 15 {
				amount = float64(mant) / pow10[digits-frac]
			} else {
				return 0, 0, 0, false
			}
			got |= 4
		}
		if i >= len(b) {
			return 0, 0, 0, false
		}
		if b[i] == '}' {
			break
		}
		i++ // ','
	}
	return ts, user, amount, got == 7
}

// BenchmarkLoopDecoder is loop (a) alone (see decoderLoop).
func BenchmarkLoopDecoder(b *testing.B) { benchLoop(b, decoderLoop) }

// BenchmarkLoopFastest is loop (b) alone (see fastLoop).
func BenchmarkLoopFastest(b *testing.B) { benchLoop(b, fastLoop) }

func benchLoop(b *testing.B, loop func(path, out string) (totals, error)) {
	skip(b)
	path, err := input()
	if err != nil {
		b.Fatal(err)
	}
	want := expected()
	b.ResetTimer()
	for range b.N {
		t, err := loop(path, b.TempDir()+"/out.jsonl")
		if err != nil {
			b.Fatal(err)
		}
		if err := t.check(want); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)*float64(rows)/b.Elapsed().Seconds(), "events/s")
}
