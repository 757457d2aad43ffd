package window

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// event is a generated input row with its time in milliseconds.
type event struct {
	row  map[string]any
	ts   int64
	user int
}

// genEvents returns n rows of users, their times increasing by up to step
// milliseconds and then moved back by up to disorder. Times, amounts and
// users come in every form the operator reads. Amounts are multiples of
// 0.25, so that sums are exact in any order.
func genEvents(rng *rand.Rand, n, users int, step, disorder int64) []event {
	base := int64(1_700_000_000_000)
	evs := make([]event, n)
	for i := range evs {
		base += rng.Int64N(step + 1)
		ts := base - rng.Int64N(disorder+1)
		u := rng.IntN(users)
		row := map[string]any{}
		switch rng.IntN(3) {
		case 0:
			row["ts"] = float64(ts)
		case 1:
			row["ts"] = time.UnixMilli(ts).UTC().Format(time.RFC3339Nano)
		default:
			row["ts"] = json.Number(strconv.FormatInt(ts, 10))
		}
		switch rng.IntN(3) {
		case 0:
			row["user"] = float64(u)
		case 1:
			row["user"] = u
		default:
			row["user"] = json.Number(strconv.Itoa(u))
		}
		amount := float64(rng.IntN(400)) / 4
		switch rng.IntN(5) {
		case 0:
			row["amount"] = strconv.FormatFloat(amount, 'f', -1, 64)
		case 1:
			row["amount"] = json.Number(strconv.FormatFloat(amount, 'f', -1, 64))
		case 2:
			// no amount: ignored by sum, avg, max, min
		default:
			row["amount"] = amount
		}
		row["item"] = fmt.Sprintf("i%d", rng.IntN(5))
		if rng.IntN(10) == 0 {
			row["item"] = nil
		}
		evs[i] = event{row: row, ts: ts, user: u}
	}
	return evs
}

var testAggs = []Aggregate{
	{Name: "orders", Func: Count},
	{Name: "revenue", Func: Sum, Field: "amount"},
	{Name: "avg_amount", Func: Avg, Field: "amount"},
	{Name: "max_amount", Func: Max, Field: "amount"},
	{Name: "min_amount", Func: Min, Field: "amount"},
	{Name: "items", Func: CountDistinct, Field: "item"},
}

// refAcc is the brute-force state of one window-group.
type refAcc struct {
	user       int
	start, end int64
	orders     int64
	vals       []float64
	items      map[string]bool
}

func (a *refAcc) add(e event) {
	a.orders++
	if v, ok := e.row["amount"]; ok {
		f, _ := strconv.ParseFloat(fmt.Sprint(v), 64)
		a.vals = append(a.vals, f)
	}
	if it, _ := e.row["item"].(string); it != "" {
		a.items[it] = true
	}
}

func (a *refAcc) row() map[string]any {
	r := map[string]any{
		"user": int64(a.user), StartField: formatMillis(a.start), EndField: formatMillis(a.end),
		"orders": a.orders, "items": int64(len(a.items)), "revenue": 0.0,
		"avg_amount": nil, "max_amount": nil, "min_amount": nil,
	}
	if len(a.vals) > 0 {
		sum, mx, mn := 0.0, a.vals[0], a.vals[0]
		for _, v := range a.vals {
			sum, mx, mn = sum+v, max(mx, v), min(mn, v)
		}
		r["revenue"], r["avg_amount"], r["max_amount"], r["min_amount"] = sum, sum/float64(len(a.vals)), mx, mn
	}
	return r
}

type refKey struct {
	user  int
	start int64
}

// refFixed computes tumbling (slide == size) or sliding windows by brute
// force: each row counts in each window it belongs to whose end is above
// the watermark at its arrival (or above the watermark minus the lateness
// under late: update). It returns the rows and the indexes of the rows no
// window took.
func refFixed(evs []event, size, slide, late int64, policy Late) (map[refKey]*refAcc, []int) {
	accs := map[refKey]*refAcc{}
	var rejected []int
	maxTS := evs[0].ts
	for i, e := range evs {
		maxTS = max(maxTS, e.ts)
		wm := maxTS - late
		limit := wm
		if policy == Update {
			limit = wm - late
		}
		taken := false
		for start := (e.ts / slide) * slide; start > e.ts-size; start -= slide {
			if start+size <= limit {
				continue
			}
			taken = true
			k := refKey{e.user, start}
			if accs[k] == nil {
				accs[k] = &refAcc{user: e.user, start: start, end: start + size, items: map[string]bool{}}
			}
			accs[k].add(e)
		}
		if !taken && policy != Drop {
			rejected = append(rejected, i)
		}
	}
	return accs, rejected
}

// refSessions computes session windows over all rows by brute force.
func refSessions(evs []event, gap int64) map[refKey]*refAcc {
	byUser := map[int][]event{}
	for _, e := range evs {
		byUser[e.user] = append(byUser[e.user], e)
	}
	accs := map[refKey]*refAcc{}
	for u, list := range byUser {
		sort.SliceStable(list, func(i, j int) bool { return list[i].ts < list[j].ts })
		var cur *refAcc
		for _, e := range list {
			if cur == nil || e.ts >= cur.end {
				cur = &refAcc{user: u, start: e.ts, items: map[string]bool{}}
				accs[refKey{u, e.ts}] = cur
			}
			cur.end = e.ts + gap
			cur.add(e)
		}
	}
	return accs
}

// runOperator feeds evs in batches of random sizes, then flushes. It
// returns every emitted row and the indexes of the rejected rows.
func runOperator(t *testing.T, o *Operator, rng *rand.Rand, evs []event) ([]map[string]any, []int) {
	t.Helper()
	var out []map[string]any
	var rejected []int
	for i := 0; i < len(evs); {
		n := min(1+rng.IntN(300), len(evs)-i) // across Process's chunks too
		rows := make([]map[string]any, n)
		for j := range rows {
			rows[j] = evs[i+j].row
		}
		got, rej := o.Process(rows)
		out = append(out, got...)
		for _, r := range rej {
			rejected = append(rejected, i+r.Index)
		}
		i += n
	}
	return append(out, o.Flush()...), rejected
}

// compareRows checks that out holds one row per window-group of want, or,
// with lastWins, that the last row of each window-group equals want's.
func compareRows(t *testing.T, out []map[string]any, want map[refKey]*refAcc, lastWins bool) {
	t.Helper()
	got := map[refKey]map[string]any{}
	for _, r := range out {
		start, err := time.Parse(time.RFC3339, r[StartField].(string))
		if err != nil {
			t.Fatalf("window_start %v: %v", r[StartField], err)
		}
		k := refKey{int(r["user"].(int64)), start.UnixMilli()}
		if _, dup := got[k]; dup && !lastWins {
			t.Fatalf("window-group %v emitted twice", k)
		}
		got[k] = r
	}
	if len(got) != len(want) {
		t.Errorf("got %d window-groups, want %d", len(got), len(want))
	}
	bad := 0
	for k, w := range want {
		if g := got[k]; !reflect.DeepEqual(g, w.row()) {
			if bad++; bad <= 3 {
				t.Errorf("window-group %v:\n got %v\nwant %v", k, g, w.row())
			}
		}
	}
}

// lastSessions returns, of the session rows out (corrections under late:
// update), those no later row replaced: a corrected session replaces every
// earlier row of its group that it overlaps.
func lastSessions(t *testing.T, out []map[string]any) []map[string]any {
	t.Helper()
	span := func(r map[string]any) (int64, int64) {
		s, err1 := time.Parse(time.RFC3339, r[StartField].(string))
		e, err2 := time.Parse(time.RFC3339, r[EndField].(string))
		if err1 != nil || err2 != nil {
			t.Fatalf("row %v: %v %v", r, err1, err2)
		}
		return s.UnixMilli(), e.UnixMilli()
	}
	var last []map[string]any
	for _, r := range out {
		lo, hi := span(r)
		last = slices.DeleteFunc(last, func(p map[string]any) bool {
			plo, phi := span(p)
			return p["user"] == r["user"] && plo < hi && lo < phi
		})
		last = append(last, r)
	}
	return last
}

func newOp(t *testing.T, spec Spec) *Operator {
	t.Helper()
	spec.TimeField, spec.GroupBy, spec.Aggregates = "ts", []string{"user"}, testAggs
	o, err := New(spec)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// TestAgainstReference compares each window type, under each late policy,
// with a brute-force computation over seeded random out-of-order input.
func TestAgainstReference(t *testing.T) {
	t.Parallel()
	type tc struct {
		name     string
		spec     Spec
		disorder int64
		users    int // 20 when 0
	}
	var cases []tc
	for _, late := range Lates {
		// The disorder is above the lateness and the size: some rows are
		// late, and some, under update, come after their window's state
		// was freed.
		cases = append(cases,
			tc{"tumbling/" + string(late), Spec{Type: Tumbling, Size: time.Second, Lateness: 300 * time.Millisecond, Late: late}, 900, 0},
			tc{"sliding/" + string(late), Spec{Type: Sliding, Size: time.Second, Slide: 300 * time.Millisecond, Lateness: 200 * time.Millisecond, Late: late}, 1500, 0},
			tc{"sliding-even/" + string(late), Spec{Type: Sliding, Size: time.Second, Slide: 250 * time.Millisecond, Lateness: 200 * time.Millisecond, Late: late}, 1500, 0})
	}
	cases = append(cases,
		tc{"session", Spec{Type: Session, Gap: 700 * time.Millisecond, Lateness: 500 * time.Millisecond}, 500, 0},
		tc{"session-no-lateness", Spec{Type: Session, Gap: 50 * time.Millisecond}, 0, 0},
		// Under update a row may be late by up to twice the lateness and
		// still be taken; with a row per user every second on average,
		// sessions close and rows fall near kept sessions.
		tc{"session/update", Spec{Type: Session, Gap: 700 * time.Millisecond, Lateness: 500 * time.Millisecond, Late: Update}, 950, 200})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			seed := time.Now().UnixNano()
			t.Logf("seed %d", seed)
			rng := rand.New(rand.NewPCG(uint64(seed), 7))
			users := c.users
			if users == 0 {
				users = 20
			}
			evs := genEvents(rng, 5000, users, 10, c.disorder)
			o := newOp(t, c.spec)
			out, rejected := runOperator(t, o, rng, evs)
			var want map[refKey]*refAcc
			var wantRej []int
			if c.spec.Type == Session {
				want = refSessions(evs, c.spec.Gap.Milliseconds())
			} else {
				slide := c.spec.Slide.Milliseconds()
				if c.spec.Type == Tumbling {
					slide = c.spec.Size.Milliseconds()
				}
				want, wantRej = refFixed(evs, c.spec.Size.Milliseconds(), slide, c.spec.Lateness.Milliseconds(), c.spec.Late)
				if len(wantRej) == 0 && c.spec.Late != Drop {
					t.Fatal("the input has no late row: the test tests nothing of lateness")
				}
			}
			if c.spec.Type == Session && c.spec.Late == Update {
				out = lastSessions(t, out)
			}
			compareRows(t, out, want, c.spec.Late == Update)
			if !slices.Equal(rejected, wantRej) {
				t.Errorf("rejected rows %v, want %v", rejected, wantRej)
			}
			if o.Len() != 0 {
				t.Errorf("%d window-groups open after Flush", o.Len())
			}
		})
	}
}

// TestSnapshotRestore stops a run mid-stream, restores its snapshot into a
// new operator and checks that the rest gives the rows an uninterrupted run
// gives, in the same order.
func TestSnapshotRestore(t *testing.T) {
	t.Parallel()
	for _, spec := range []Spec{
		{Type: Tumbling, Size: time.Second, Lateness: 300 * time.Millisecond, Late: Update},
		{Type: Sliding, Size: time.Second, Slide: 250 * time.Millisecond, Lateness: 200 * time.Millisecond, Late: DeadLetter},
		{Type: Session, Gap: 300 * time.Millisecond, Lateness: 200 * time.Millisecond, Late: Update},
	} {
		t.Run(string(spec.Type), func(t *testing.T) {
			t.Parallel()
			seed := time.Now().UnixNano()
			t.Logf("seed %d", seed)
			rng := rand.New(rand.NewPCG(uint64(seed), 9))
			evs := genEvents(rng, 4000, 30, 10, 500)
			rows := make([]map[string]any, len(evs))
			for i, e := range evs {
				rows[i] = e.row
			}
			batches := [][]map[string]any{}
			for i := 0; i < len(rows); i += 100 {
				batches = append(batches, rows[i:min(i+100, len(rows))])
			}
			run := func(o *Operator, bs [][]map[string]any) (out []map[string]any, rej []string) {
				for _, b := range bs {
					got, r := o.Process(b)
					out = append(out, got...)
					for _, x := range r {
						rej = append(rej, x.Err.Error())
					}
				}
				return out, rej
			}
			whole := newOp(t, spec)
			wantOut, wantRej := run(whole, batches)
			wantOut = append(wantOut, whole.Flush()...)

			cut := len(batches) / 2
			first := newOp(t, spec)
			out, rej := run(first, batches[:cut])
			snap, err := first.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			if again, _ := first.Snapshot(); string(again) != string(snap) {
				t.Fatal("two snapshots of one state differ")
			}
			second := newOp(t, spec)
			if err := second.Restore(snap); err != nil {
				t.Fatal(err)
			}
			if again, _ := second.Snapshot(); string(again) != string(snap) {
				t.Fatal("the snapshot of a restored operator differs from the one it restored")
			}
			out2, rej2 := run(second, batches[cut:])
			out = append(append(out, out2...), second.Flush()...)
			rej = append(rej, rej2...)
			if !reflect.DeepEqual(out, wantOut) {
				t.Errorf("restored run emitted %d rows, uninterrupted %d; they differ", len(out), len(wantOut))
			}
			if !slices.Equal(rej, wantRej) {
				t.Errorf("restored run rejected %d rows, uninterrupted %d", len(rej), len(wantRej))
			}
			t.Logf("snapshot of %d bytes", len(snap))
		})
	}
}

func TestRestoreRefusesAnotherWindow(t *testing.T) {
	t.Parallel()
	a := newOp(t, Spec{Type: Tumbling, Size: time.Minute})
	a.Process([]map[string]any{{"ts": 1.0, "user": 1}})
	snap, _ := a.Snapshot()
	b := newOp(t, Spec{Type: Tumbling, Size: time.Hour})
	if err := b.Restore(snap); err == nil {
		t.Error("a snapshot of a 1m window restored into a 1h one")
	}
	for _, bad := range [][]byte{nil, []byte("KFW1"), snap[:len(snap)-1], append(slices.Clone(snap), 0)} {
		if err := a.Restore(bad); err == nil {
			t.Errorf("restore of %d bad bytes: no error", len(bad))
		}
	}
}

// at makes a row of user u at second sec past the epoch.
func at(u string, sec float64, amount any) map[string]any {
	return map[string]any{"user": u, "ts": time.UnixMilli(int64(sec * 1000)).UTC().Format(time.RFC3339Nano), "amount": amount}
}

// TestLatePolicies follows one late row through each policy.
func TestLatePolicies(t *testing.T) {
	t.Parallel()
	for _, typ := range []Type{Tumbling, Session} {
		for _, late := range Lates {
			t.Run(string(typ)+"/"+string(late), func(t *testing.T) {
				t.Parallel()
				o, err := New(Spec{Type: typ, Size: time.Minute, Gap: time.Minute, TimeField: "ts", Lateness: 10 * time.Second,
					Late: late, GroupBy: []string{"user"}, Aggregates: []Aggregate{{"n", Count, ""}, {"total", Sum, "amount"}}})
				if err != nil {
					t.Fatal(err)
				}
				// [0, 60s) (a session [5s, 65s)) closes when the watermark
				// reaches 65s: at the row of 75s.
				out, rej := o.Process([]map[string]any{at("a", 5, 1), at("a", 75, 2)})
				if len(out) != 1 || out[0]["n"] != int64(1) || len(rej) != 0 {
					t.Fatalf("closing: out %v rejected %v", out, rej)
				}
				first := out[0]
				out, rej = o.Process([]map[string]any{at("a", 4, 10)})
				switch late {
				case Drop:
					if len(out) != 0 || len(rej) != 0 {
						t.Errorf("drop: out %v rejected %v", out, rej)
					}
				case DeadLetter:
					if len(out) != 0 || len(rej) != 1 || !errors.Is(rej[0].Err, ErrLate) || rej[0].Index != 0 {
						t.Errorf("dead_letter: out %v rejected %v", out, rej)
					}
				case Update:
					if len(rej) != 0 || len(out) != 1 {
						t.Fatalf("update: out %v rejected %v", out, rej)
					}
					if out[0]["n"] != int64(2) || out[0]["total"] != 11.0 || out[0][StartField] != "1970-01-01T00:00:04Z" && typ == Session ||
						typ == Tumbling && out[0][StartField] != first[StartField] {
						t.Errorf("update: corrected row %v (first %v)", out[0], first)
					}
					// When the watermark passes end + lateness (for the
					// session, 65s+10s+10s), the window's state is freed.
					o.Process([]map[string]any{at("b", 86, 0)})
					_, rej = o.Process([]map[string]any{at("a", 4.5, 1)})
					if len(rej) != 1 || !errors.Is(rej[0].Err, ErrTooLate) {
						t.Errorf("update after end+lateness: rejected %v, want ErrTooLate", rej)
					}
				}
				rest := o.Flush()
				wantRest := 1
				if late == Update {
					wantRest = 2 // and b's
				}
				if len(rest) != wantRest || rest[0]["user"] != "a" || rest[0]["total"] != 2.0 {
					t.Errorf("flush: %v", rest)
				}
			})
		}
	}
}

// TestSessionUpdateJoinsKept: a row on time for the watermark but within
// the gap of a session closed and kept (late: update) joins that session,
// which is emitted again corrected, rather than starting a second one.
func TestSessionUpdateJoinsKept(t *testing.T) {
	t.Parallel()
	o, err := New(Spec{Type: Session, Gap: 20 * time.Second, TimeField: "ts", Lateness: 30 * time.Second,
		Late: Update, GroupBy: []string{"user"}, Aggregates: []Aggregate{{"n", Count, ""}, {"s", Sum, "amount"}}})
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, r := range []map[string]any{at("1", 0, 1), at("1", 10, 2), at("2", 70, 100), at("1", 25, 4), at("2", 200, 100)} {
		got, rej := o.Process([]map[string]any{r})
		if len(rej) != 0 {
			t.Fatalf("rejected %v", rej)
		}
		out = append(out, got...)
	}
	out = append(out, o.Flush()...)
	var user1 []string
	for _, r := range out {
		if r["user"] == "1" {
			user1 = append(user1, fmt.Sprintf("%v %v %v %v", r[StartField], r[EndField], r["n"], r["s"]))
		}
	}
	want := []string{
		"1970-01-01T00:00:00Z 1970-01-01T00:00:30Z 2 3",
		"1970-01-01T00:00:00Z 1970-01-01T00:00:45Z 3 7",
	}
	if !slices.Equal(user1, want) {
		t.Errorf("user 1's rows:\n%s\nwant\n%s", strings.Join(user1, "\n"), strings.Join(want, "\n"))
	}
}

// TestSlidingPartlyLate: a row whose windows are partly closed counts in
// the open ones only, and is not rejected.
func TestSlidingPartlyLate(t *testing.T) {
	t.Parallel()
	o, err := New(Spec{Type: Sliding, Size: time.Minute, Slide: 30 * time.Second, TimeField: "ts",
		GroupBy: []string{"user"}, Aggregates: []Aggregate{{"n", Count, ""}}})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := o.Process([]map[string]any{at("a", 40, nil), at("a", 61, nil)}) // closes [0, 60s)
	if len(out) != 1 {
		t.Fatalf("out %v", out)
	}
	out, rej := o.Process([]map[string]any{at("a", 45, nil)}) // in [0, 60s) closed and [30s, 90s) open
	if len(out) != 0 || len(rej) != 0 {
		t.Fatalf("out %v rejected %v", out, rej)
	}
	out = o.Flush()
	want := []string{"1970-01-01T00:00:30Z 3", "1970-01-01T00:01:00Z 1"}
	var got []string
	for _, r := range out {
		got = append(got, fmt.Sprint(r[StartField], " ", r["n"]))
	}
	if !slices.Equal(got, want) {
		t.Errorf("flush: %v, want %v", got, want)
	}
}

// TestRowErrors: a row that cannot be read is rejected and changes nothing.
func TestRowErrors(t *testing.T) {
	t.Parallel()
	o, err := New(Spec{Type: Tumbling, Size: time.Minute, TimeField: "ts", GroupBy: []string{"user"},
		Aggregates: []Aggregate{{"n", Count, ""}, {"total", Sum, "amount"}, {"k", CountDistinct, "tag"}}})
	if err != nil {
		t.Fatal(err)
	}
	rows := []map[string]any{
		{"ts": 1000.0, "user": "a", "amount": "12.5"},
		{"ts": 1000.0, "user": "a", "amount": "twelve"},
		{"user": "a", "amount": 1},
		{"ts": "yesterday", "user": "a"},
		{"ts": true, "user": "a"},
		{"ts": 1000, "user": map[string]any{"id": 1}},
		{"ts": 1000, "user": "a", "amount": []any{1}},
		{"ts": 1000, "user": "a", "tag": []any{1}},
		{"ts": "1970-01-01T00:00:02Z", "user": "a", "amount": json.Number("0.5"), "tag": 1},
		{"ts": json.Number("3000"), "user": "a", "amount": int64(2), "tag": 1.0},
		{"ts": "4000", "user": "a", "amount": nil, "tag": "1"},
	}
	out, rej := o.Process(rows)
	if len(out) != 0 {
		t.Fatalf("out %v", out)
	}
	wantRej := map[int]string{
		1: `aggregate total: field "amount": "twelve" is not a number`,
		2: `time field "ts" is missing`,
		3: `time field "ts": "yesterday" is neither RFC 3339 nor epoch milliseconds`,
		4: `time field "ts": true is neither RFC 3339 nor epoch milliseconds`,
		5: `group_by field "user": a map[string]interface {} is not a scalar`,
		6: `aggregate total: field "amount": a []interface {} is not a number`,
		7: `aggregate k: field "tag": a []interface {} is not a scalar`,
	}
	if len(rej) != len(wantRej) {
		t.Errorf("rejected %v", rej)
	}
	for _, r := range rej {
		if r.Err.Error() != wantRej[r.Index] || !reflect.DeepEqual(r.Row, rows[r.Index]) {
			t.Errorf("row %d: %v, want %s", r.Index, r.Err, wantRej[r.Index])
		}
	}
	out = o.Flush()
	want := []map[string]any{{"user": "a", StartField: "1970-01-01T00:00:00Z", EndField: "1970-01-01T00:01:00Z", "n": int64(4), "total": 15.0, "k": int64(2)}}
	if !reflect.DeepEqual(out, want) {
		t.Errorf("flush: %v, want %v", out, want)
	}
}

// TestProcessingTime: without a time field, the clock places rows and Tick
// closes windows when no row comes.
func TestProcessingTime(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 10, 0, 5, 0, time.UTC)
	o, err := New(Spec{Type: Tumbling, Size: time.Minute, GroupBy: []string{"shop"},
		Aggregates: []Aggregate{{"n", Count, ""}}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	o.Process([]map[string]any{{"shop": 1}, {"shop": 1}, {"shop": true}})
	if out := o.Tick(); len(out) != 0 {
		t.Fatalf("tick in the window: %v", out)
	}
	now = now.Add(time.Minute)
	out := o.Tick()
	want := []map[string]any{
		{"shop": int64(1), "n": int64(2), StartField: "2026-01-01T10:00:00Z", EndField: "2026-01-01T10:01:00Z"},
		{"shop": true, "n": int64(1), StartField: "2026-01-01T10:00:00Z", EndField: "2026-01-01T10:01:00Z"},
	}
	if !reflect.DeepEqual(out, want) {
		t.Errorf("tick: %v, want %v", out, want)
	}
	if wm, ok := o.Watermark(); !ok || !wm.Equal(now.Truncate(time.Millisecond)) {
		t.Errorf("watermark %v %v, want %v", wm, ok, now)
	}
}

// TestGroupKeys: numbers group by value whatever their Go type; a number
// and a string never group together; several fields make one key.
func TestGroupKeys(t *testing.T) {
	t.Parallel()
	o, err := New(Spec{Type: Tumbling, Size: time.Minute, TimeField: "ts", GroupBy: []string{"a", "b"},
		Aggregates: []Aggregate{{"n", Count, ""}}})
	if err != nil {
		t.Fatal(err)
	}
	o.Process([]map[string]any{
		{"ts": 0, "a": 1.0, "b": "x"}, {"ts": 0, "a": 1, "b": "x"}, {"ts": 0, "a": json.Number("1"), "b": "x"},
		{"ts": 0, "a": "1", "b": "x"}, {"ts": 0, "a": 1.5, "b": nil}, {"ts": 0, "b": nil, "a": 1.5},
		{"ts": 0, "a": "x", "b": ""}, {"ts": 0, "a": "", "b": "x"},
	})
	var got []string
	for _, r := range o.Flush() {
		got = append(got, fmt.Sprintf("%T(%v) %T(%v) %d", r["a"], r["a"], r["b"], r["b"], r["n"]))
	}
	want := []string{"int64(1) string(x) 3", "string(1) string(x) 1", "float64(1.5) <nil>(<nil>) 2", "string(x) string() 1", "string() string(x) 1"}
	if !slices.Equal(got, want) {
		t.Errorf("groups\n got %q\nwant %q", got, want)
	}
}

// TestBoundaries: windows are [start, end): a row at a tumbling window's
// end opens the next, and a row exactly a gap after a session's last row
// starts a new session; rows less than a gap apart, out of order, bridge
// two sessions into one.
func TestBoundaries(t *testing.T) {
	t.Parallel()
	spans := func(typ Type, secs ...float64) []string {
		o, err := New(Spec{Type: typ, Size: time.Minute, Gap: time.Minute, TimeField: "ts", Lateness: time.Hour,
			Aggregates: []Aggregate{{"n", Count, ""}}})
		if err != nil {
			t.Fatal(err)
		}
		var rows []map[string]any
		for _, s := range secs {
			rows = append(rows, at("a", s, nil))
		}
		o.Process(rows)
		var got []string
		for _, r := range o.Flush() {
			got = append(got, fmt.Sprint(r[StartField], " ", r[EndField], " ", r["n"]))
		}
		return got
	}
	for _, c := range []struct {
		typ  Type
		secs []float64
		want []string
	}{
		{Tumbling, []float64{0, 59.999, 60}, []string{"1970-01-01T00:00:00Z 1970-01-01T00:01:00Z 2", "1970-01-01T00:01:00Z 1970-01-01T00:02:00Z 1"}},
		{Tumbling, []float64{-0.001}, []string{"1969-12-31T23:59:00Z 1970-01-01T00:00:00Z 1"}},
		{Session, []float64{0, 60}, []string{"1970-01-01T00:00:00Z 1970-01-01T00:01:00Z 1", "1970-01-01T00:01:00Z 1970-01-01T00:02:00Z 1"}},
		{Session, []float64{0, 59.999}, []string{"1970-01-01T00:00:00Z 1970-01-01T00:01:59.999Z 2"}},
		{Session, []float64{0, 100, 50}, []string{"1970-01-01T00:00:00Z 1970-01-01T00:02:40Z 3"}},
	} {
		if got := spans(c.typ, c.secs...); !slices.Equal(got, c.want) {
			t.Errorf("%s %v:\n got %q\nwant %q", c.typ, c.secs, got, c.want)
		}
	}
}

// TestStateIsFreed: a long stream keeps only the open windows and, under
// late: update, the closed ones within one lateness of the watermark.
func TestStateIsFreed(t *testing.T) {
	t.Parallel()
	for _, spec := range []Spec{
		{Type: Tumbling, Size: time.Second, Lateness: time.Second, Late: Update},
		{Type: Sliding, Size: time.Second, Slide: 250 * time.Millisecond, Lateness: time.Second, Late: Update},
		{Type: Session, Gap: time.Second, Lateness: time.Second, Late: Update},
		{Type: Session, Gap: time.Second, Late: Drop},
	} {
		o := newOp(t, spec)
		for sec := range 1000 {
			var rows []map[string]any
			for u := range 10 {
				// Users come every other second half the time: sessions end.
				if u%2 == 0 || sec%4 < 2 {
					rows = append(rows, at(strconv.Itoa(u), float64(sec)+float64(u)/100, 1.0))
				}
			}
			o.Process(rows)
		}
		sessions := 0
		for _, g := range o.groups {
			sessions += len(g.open) + len(g.kept)
		}
		// Open: the windows of the last second; kept: one lateness (1s) more.
		// Without freeing, there would be thousands.
		if n := len(o.open) + len(o.kept); n > 12 || sessions > 30 || len(o.timers) > 60 {
			t.Errorf("%s %s: %d windows, %d sessions and %d timers after 1000s of rows", spec.Type, spec.Late, n, sessions, len(o.timers))
		}
	}
}

// TestMaxAhead: a row whose event time is further ahead of the clock than
// max_ahead (a timestamp in microseconds) is rejected with ErrAhead and
// moves no watermark: the windows of the rows after it stay right.
func TestMaxAhead(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	base := now.Add(-time.Hour).UnixMilli()
	for _, tc := range []struct {
		ahead  time.Duration
		reject bool
	}{{0, true}, {time.Hour, true}, {-1, false}} {
		o, err := New(Spec{Type: Tumbling, Size: time.Minute, TimeField: "ts", MaxAhead: tc.ahead,
			Aggregates: []Aggregate{{"n", Count, ""}}, Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		out, rej := o.Process([]map[string]any{
			{"ts": float64(base)},
			{"ts": float64(base * 1000)}, // microseconds: year 58000 and more
			{"ts": float64(base + 1000)},
			{"ts": float64(now.Add(time.Hour - time.Second).UnixMilli())}, // within an hour: taken
		})
		if !tc.reject {
			// No bound: the wild row moves the watermark and the rows
			// after it are late, as they were before max_ahead.
			if len(rej) != 2 || !errors.Is(rej[0].Err, ErrLate) {
				t.Errorf("max_ahead %v: rejected %v, want the 2 rows after the wild one late", tc.ahead, rej)
			}
			continue
		}
		if len(rej) != 1 || rej[0].Index != 1 || !errors.Is(rej[0].Err, ErrAhead) {
			t.Fatalf("max_ahead %v: rejected %v, want row 1 with ErrAhead", tc.ahead, rej)
		}
		// The row an hour ahead closed the first window, which has both
		// rows of its minute.
		if len(out) != 1 || out[0]["n"] != int64(2) {
			t.Errorf("max_ahead %v: out %v, want the first window with n=2", tc.ahead, out)
		}
	}
}

// TestEpochSecondsHint: a time given as epoch seconds is read as
// milliseconds (1970); the operator reports it, and a row it makes late
// says why.
func TestEpochSecondsHint(t *testing.T) {
	t.Parallel()
	o, err := New(Spec{Type: Tumbling, Size: time.Minute, TimeField: "ts", Lateness: time.Second,
		GroupBy: []string{"user"}, Aggregates: []Aggregate{{"n", Count, ""}}})
	if err != nil {
		t.Fatal(err)
	}
	row := func(ts any) map[string]any { return map[string]any{"user": 1, "ts": ts} }
	o.Process([]map[string]any{row(int64(1777636800000)), row("2026-05-01T12:00:00Z"), row(json.Number("1777636801000"))})
	if o.EpochSeconds() {
		t.Fatal("epoch milliseconds and RFC 3339 taken for seconds")
	}
	_, rej := o.Process([]map[string]any{row(json.Number("1777636807"))})
	if len(rej) != 1 || !errors.Is(rej[0].Err, ErrLate) || !strings.Contains(rej[0].Err.Error(), "its time 1777636807 looks like epoch seconds") {
		t.Errorf("rejected %v", rej)
	}
	if !o.EpochSeconds() {
		t.Error("epoch seconds not reported")
	}
}
