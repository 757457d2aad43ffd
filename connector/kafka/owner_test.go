package kafka

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/stream"
)

// owner records what a source tells a stream.PartitionHandler.
type owner struct {
	mu       sync.Mutex
	owned    map[string]bool
	events   []string
	failOnce bool
}

func (o *owner) Assigned(_ context.Context, parts []string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.failOnce {
		o.failOnce = false
		return errors.New("store down")
	}
	for _, p := range parts {
		o.owned[p] = true
		o.events = append(o.events, "+"+p)
	}
	return nil
}

func (o *owner) Revoked(parts []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, p := range parts {
		delete(o.owned, p)
		o.events = append(o.events, "-"+p)
	}
}

func (o *owner) has(p string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.owned[p]
}

// TestPartitionOwnership: a source announces a partition as assigned
// before it returns any record of it (holding the records while the
// announcement fails), and as revoked once the records it read from it
// were acknowledged, when a second member takes it over.
func TestPartitionOwnership(t *testing.T) {
	t.Parallel()
	addrs, topic := cluster(t)
	k := start(t, addrs, topic, map[string]string{"key_field": "{id}", "heartbeat": "100ms"})
	ctx := context.Background()
	var rows []any
	for i := 1; i <= 400; i++ {
		rows = append(rows, map[string]any{"id": i})
	}
	if err := k.Write(ctx, rows); err != nil {
		t.Fatal(err)
	}
	open := func(o *owner) stream.Source {
		src, err := k.OpenSource(ctx, stream.SourceOptions{Name: "g"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = src.Close(ctx) })
		src.(stream.PartitionOwner).OwnPartitions(o)
		return src
	}
	oa := &owner{owned: map[string]bool{}, failOnce: true}
	a := open(oa)
	// The first announcement fails: the records are held, not lost.
	var got int
	for tries := 0; got == 0; tries++ {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		msgs, err := a.Read(rctx, 50)
		cancel()
		if tries == 0 && err == nil {
			t.Fatal("a read whose partitions could not be announced returned records")
		}
		for _, m := range msgs {
			if !oa.has(m.Partition) {
				t.Fatalf("record of %s returned before its partition was announced", m.Partition)
			}
		}
		if err := a.Ack(ctx, msgs); err != nil {
			t.Fatal(err)
		}
		got += len(msgs)
		if tries > 5 {
			t.Fatal("no records after the announcement failed once")
		}
	}
	// B joins; A keeps reading and acknowledging: the partitions that move
	// are revoked from A and announced to B before B reads them.
	ob := &owner{owned: map[string]bool{}}
	b := open(ob)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	read := func(src stream.Source, o *owner) {
		defer wg.Done()
		for wctx.Err() == nil {
			rctx, c := context.WithTimeout(wctx, 300*time.Millisecond)
			msgs, _ := src.Read(rctx, 20)
			c()
			for _, m := range msgs {
				if !o.has(m.Partition) {
					t.Errorf("record of %s returned before its partition was announced", m.Partition)
				}
			}
			_ = src.Ack(ctx, msgs)
			if len(ob.snapshot()) > 0 && len(oa.revoked()) > 0 {
				return
			}
		}
	}
	wg.Add(2)
	go read(a, oa)
	go read(b, ob)
	// Records keep coming, to every partition: the moved ones are read by B.
	for i := 0; i < 50 && wctx.Err() == nil && (len(ob.snapshot()) == 0 || len(oa.revoked()) == 0); i++ {
		if err := k.Write(ctx, rows[:40]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	wg.Wait()
	revoked, assigned := oa.revoked(), ob.snapshot()
	if len(revoked) == 0 || len(assigned) == 0 {
		t.Fatalf("after B joined: A's events %v, B's %v; want partitions revoked from A and assigned to B", oa.events, ob.events)
	}
	for _, p := range assigned {
		if oa.has(p) {
			t.Errorf("%s is owned by both members", p)
		}
	}
}

func (o *owner) snapshot() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []string
	for p := range o.owned {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

func (o *owner) revoked() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []string
	for _, e := range o.events {
		if e[0] == '-' {
			out = append(out, e[1:])
		}
	}
	return out
}
