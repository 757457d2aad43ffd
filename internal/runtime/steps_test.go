package runtime

import (
	"testing"
	"time"
)

// A step's counters add up each call: rows in and out, failed calls,
// retries, and the batches inside it now.
func TestStepCounts(t *testing.T) {
	s := NewSteps([]string{"A"})[0]
	began := s.Enter()
	if st := s.Stats(); st.Busy != 1 {
		t.Fatalf("inside a call: busy %d, want 1", st.Busy)
	}
	time.Sleep(time.Millisecond)
	s.Leave(began, 10, 7, false)
	s.Leave(s.Enter(), 3, 0, true)
	s.Retried()
	st := s.Stats()
	want := StepStats{Func: "A", Calls: 2, In: 13, Out: 7, Errors: 1, Retries: 1}
	busyNs := st.BusyNs
	st.BusyNs = 0
	if st != want || busyNs < int64(time.Millisecond) {
		t.Fatalf("stats %+v (busy %dns), want %+v and at least 1ms busy", st, busyNs, want)
	}
}

// BenchmarkStepCounters is what counting costs a function call: Enter
// and Leave on one step from every worker at once (the steps' counters
// are shared by the workers). It is paid once per call of a function,
// that is per batch, not per row.
func BenchmarkStepCounters(b *testing.B) {
	s := NewSteps([]string{"A"})[0]
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s.Leave(s.Enter(), 4096, 4096, false)
		}
	})
}
