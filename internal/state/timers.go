package state

import (
	"container/heap"
	"context"
	"strconv"
	"strings"
	"sync"
)

// TimerPrefix starts the state name of every timer entry: a timer is a
// keyed-state entry ID{Name: TimerPrefix + function + "/" + timer, Key:
// stream key, Field: TimerEvent or TimerProcessing} whose value is the
// time it fires at, in Unix milliseconds. It commits with its batch and is
// loaded at start like any entry.
const TimerPrefix = "kisflow.timer/"

// The fields of a timer entry: its time domain.
const (
	TimerEvent      = "event"
	TimerProcessing = "processing"
)

// TimerID returns the ID of timer name set by function fn for key.
func TimerID(fn, name, key string, event bool) ID {
	f := TimerProcessing
	if event {
		f = TimerEvent
	}
	return ID{Name: TimerPrefix + fn + "/" + name, Key: key, Field: f}
}

// TimerOf splits a timer entry's name into the function and the timer,
// false when the name is not a timer's.
func TimerOf(id ID) (fn, name string, ok bool) {
	rest, ok := strings.CutPrefix(id.Name, TimerPrefix)
	if !ok {
		return "", "", false
	}
	fn, name, ok = strings.Cut(rest, "/")
	return fn, name, ok
}

// Timer is a timer that is due: its entry and the time it was set to.
type Timer struct {
	ID ID
	At int64 // Unix milliseconds
}

// Event reports whether the timer is in event time.
func (t Timer) Event() bool { return t.ID.Field == TimerEvent }

// timerHeap orders candidates by time, then key, then name.
type timerHeap []Timer

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	a, b := h[i], h[j]
	if a.At != b.At {
		return a.At < b.At
	}
	if a.ID.Key != b.ID.Key {
		return a.ID.Key < b.ID.Key
	}
	return a.ID.Name < b.ID.Name
}
func (h timerHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)   { *h = append(*h, x.(Timer)) }
func (h *timerHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// laneTimers is the in-memory index by time of the timers of one lane:
// candidates, each checked against the state when its time comes. A
// candidate stays until the state, committed, no longer holds it, so that
// a timer whose firing is dropped with its batch fires again.
type laneTimers struct {
	mu           sync.Mutex
	event, procs timerHeap
}

func (l *laneTimers) push(t Timer) {
	l.mu.Lock()
	if t.Event() {
		heap.Push(&l.event, t)
	} else {
		heap.Push(&l.procs, t)
	}
	l.mu.Unlock()
}

// laneOf is the lane of a key's timers.
func (t *Table) laneOf(key string) int {
	if len(t.lanes) == 1 {
		return 0
	}
	return Partition(key, len(t.lanes))
}

func (t *Table) pushTimer(lane int, tm Timer) {
	t.timerMu.Lock()
	if t.timers == nil {
		t.timers = make([]*laneTimers, len(t.lanes))
		for i := range t.timers {
			t.timers[i] = &laneTimers{}
		}
	}
	lt := t.timers[lane]
	t.timerMu.Unlock()
	lt.push(tm)
}

func (t *Table) laneTimers(lane int) *laneTimers {
	t.timerMu.Lock()
	defer t.timerMu.Unlock()
	if t.timers == nil || lane < 0 || lane >= len(t.timers) {
		return nil
	}
	return t.timers[lane]
}

func timerValue(e Entry) (int64, bool) {
	switch v := e.Val.(type) {
	case int64:
		return v, true
	case nil:
	default:
		return 0, false
	}
	if e.Raw == nil {
		return 0, false
	}
	at, err := strconv.ParseInt(string(e.Raw), 10, 64)
	return at, err == nil
}

// SetTimer sets the timer id to fire at at (Unix milliseconds), replacing
// the time it had.
func (x *Txn) SetTimer(id ID, at int64) error {
	if err := x.use(id.Key); err != nil {
		return err
	}
	x.set(id, Entry{Val: at})
	if x.lane != anyLane {
		x.t.pushTimer(x.t.laneOf(id.Key), Timer{ID: id, At: at})
	}
	return nil
}

// TimerAt returns the time timer id is set to, false when it is not set.
func (x *Txn) TimerAt(id ID) (int64, bool, error) {
	e, ok, err := x.Get(id)
	if err != nil || !ok {
		return 0, false, err
	}
	at, ok := timerValue(e)
	return at, ok, nil
}

// DueTimers returns the timers of the Txn's lane that are due: event-time
// timers at or before watermark, processing-time timers at or before now
// (both Unix milliseconds), as the Txn sees the state, each once, event
// time first, each domain in time order (then by key and name). Firing
// one is deleting it (Delete) and running its callback in the Txn.
func (x *Txn) DueTimers(watermark, now int64) []Timer {
	lane := x.lane
	if len(x.t.lanes) == 1 {
		lane = 0
	}
	l := x.t.laneTimers(lane)
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var due []Timer
	due = x.due(&l.event, watermark, due)
	due = x.due(&l.procs, now, due)
	return due
}

func (x *Txn) due(h *timerHeap, bound int64, due []Timer) []Timer {
	var keep []Timer
	seen := map[Timer]bool{}
	for h.Len() > 0 && (*h)[0].At <= bound {
		c := heap.Pop(h).(Timer)
		if seen[c] {
			continue
		}
		seen[c] = true
		if e, ok := x.lookup(c.ID); ok && e.live() {
			if at, ok := timerValue(e); ok && at == c.At {
				due = append(due, c)
				keep = append(keep, c) // until its deletion commits
				continue
			}
		}
		x.t.mu.RLock()
		e, ok := x.t.get(c.ID)
		x.t.mu.RUnlock()
		if ok {
			if at, ok := timerValue(e); ok && at == c.At {
				keep = append(keep, c) // a change in flight may yet be dropped
			}
		}
	}
	for _, c := range keep {
		heap.Push(h, c)
	}
	return due
}

// Clock is what a run knows of event time: Watermark, the watermark the
// rows of its batch are judged against (as it was before the batch was
// read), and Fire, the watermark its event-time timers fire at (after the
// batch). Set is false when the flow declares no event time.
type Clock struct {
	Watermark, Fire int64
	Set             bool
}

type clockKey struct{}

// WithClock returns ctx carrying c.
func WithClock(ctx context.Context, c Clock) context.Context {
	return context.WithValue(ctx, clockKey{}, c)
}

// ClockFrom returns the Clock ctx carries.
func ClockFrom(ctx context.Context) (Clock, bool) {
	c, ok := ctx.Value(clockKey{}).(Clock)
	return c, ok
}
