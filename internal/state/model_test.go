package state

import (
	"encoding/json"
	"maps"
	"math/rand/v2"
	"strconv"
	"testing"
)

// TestTableAgainstAModel runs random puts, deletes, reads and rollbacks in
// Txns, two at a time on a lane, committed with Apply or ApplyUnsaved, and
// saves (TakeUnsaved) now and then, against a model made of plain maps:
// every read sees what the model says, and after each save, the store
// the saves wrote holds exactly the committed state. With collide, every
// ID of a key length hashes alike, which takes the paths of IDs that
// share a hash.
func TestTableAgainstAModel(t *testing.T) {
	t.Parallel()
	for _, collide := range []bool{false, true} {
		t.Run("collide="+strconv.FormatBool(collide), func(t *testing.T) {
			t.Parallel()
			r := rand.New(rand.NewPCG(7, 11))
			var ids []ID
			for i := range 40 {
				id := ID{Name: "n" + strconv.Itoa(i%3), Key: strconv.Itoa(i % 13)}
				if i%4 == 0 {
					id.Field = "f" + strconv.Itoa(i%5)
				}
				ids = append(ids, id)
			}
			tb := New(1, json.Marshal)
			tb.collide = collide
			committed, store := map[ID]int{}, map[ID]int{}
			type txn struct {
				x    *Txn
				mine map[ID]*int // nil value: deleted
			}
			read := func(tx, prev *txn, id ID) (int, bool) {
				for _, m := range []*txn{tx, prev} {
					if m == nil {
						continue
					}
					if v, ok := m.mine[id]; ok {
						if v == nil {
							return 0, false
						}
						return *v, true
					}
				}
				v, ok := committed[id]
				return v, ok
			}
			run := func(tx, prev *txn) {
				for range r.IntN(30) {
					id := ids[r.IntN(len(ids))]
					switch op := r.IntN(10); {
					case op < 4:
						e, ok, err := tx.x.Get(id)
						want, wok := read(tx, prev, id)
						if err != nil || ok != wok || ok && e.Val.(int) != want {
							t.Fatalf("get %v: %v %v %v, want %v %v", id, e.Val, ok, err, want, wok)
						}
					case op < 8:
						v := r.IntN(1000)
						_ = tx.x.Put(id, v, 0)
						tx.mine[id] = &v
					case op < 9:
						_ = tx.x.Delete(id)
						tx.mine[id] = nil
					default:
						sp, before := tx.x.Savepoint(), maps.Clone(tx.mine)
						for range r.IntN(5) {
							id := ids[r.IntN(len(ids))]
							_ = tx.x.Put(id, -1, 0)
						}
						tx.x.Rollback(sp)
						tx.mine = before
					}
				}
			}
			commit := func(tx *txn, unsaved bool) {
				if unsaved {
					tb.ApplyUnsaved([]*Txn{tx.x})
				} else {
					tb.Apply([]*Txn{tx.x})
				}
				for id, v := range tx.mine {
					if v == nil {
						delete(committed, id)
					} else {
						committed[id] = *v
					}
					if !unsaved { // saved with its batch
						if v == nil {
							delete(store, id)
						} else {
							store[id] = *v
						}
					}
				}
			}
			for round := range 400 {
				a := &txn{x: tb.Begin(0), mine: map[ID]*int{}}
				run(a, nil)
				var b *txn
				if r.IntN(2) == 0 {
					b = &txn{x: tb.Begin(0), mine: map[ID]*int{}}
					run(b, a)
				}
				// As the runtime does: a batch saved with its changes
				// while changes wait for a save waits with them.
				unsaved := round%50 > 10 || tb.HasUnsaved()
				commit(a, unsaved)
				if b != nil {
					commit(b, unsaved)
				}
				if r.IntN(5) == 0 {
					into := map[ID]Entry{}
					tb.TakeUnsaved(into)
					for id, e := range into {
						if e.Deleted {
							if _, ok := store[id]; !ok {
								t.Fatalf("round %d: deletion of %v, which the store does not hold", round, id)
							}
							delete(store, id)
						} else {
							store[id] = e.Val.(int)
						}
					}
					if !maps.Equal(store, committed) {
						t.Fatalf("round %d: store %v after the save, committed %v", round, store, committed)
					}
				}
			}
			if tb.Len() != len(committed) {
				t.Fatalf("%d entries, want %d", tb.Len(), len(committed))
			}
			for id, v := range committed {
				if e, ok := tb.Committed(id); !ok || e.Val.(int) != v {
					t.Fatalf("%v committed %v %v, want %d", id, e.Val, ok, v)
				}
			}
		})
	}
}
