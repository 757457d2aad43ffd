package state

import "hash/maphash"

// hash returns the hash of id the table's maps are keyed by: a map keyed
// by ID hashes three strings at every lookup, one keyed by uint64 hashes
// an integer, and a Txn reading then setting an entry through its own
// changes, those of the lane's earlier Txns and the committed ones hashes
// the ID once.
func (t *Table) hash(id ID) uint64 {
	const mix = 0x9e3779b97f4a7c15
	if t.collide {
		return uint64(len(id.Key) & 1) // tests: IDs hash alike
	}
	h := maphash.String(t.seed, id.Key)
	h = h*mix ^ maphash.String(t.seed, id.Name)
	if id.Field != "" {
		h = h*mix ^ maphash.String(t.seed, id.Field)
	}
	return h
}

// cells is the committed entries, by the hash of their ID; cells whose
// IDs hash alike are chained.
type cells struct {
	m map[uint64]*cell
	n int
}

// get returns the cell of id, whose hash is h; nil if none.
func (s *cells) get(h uint64, id ID) *cell {
	for c := s.m[h]; c != nil; c = c.next {
		if c.id == id {
			return c
		}
	}
	return nil
}

// add adds c, of an ID with hash h that has no cell.
func (s *cells) add(h uint64, c *cell) {
	c.h, c.next = h, s.m[h]
	s.m[h] = c
	s.n++
}

// remove removes c.
func (s *cells) remove(c *cell) {
	if p := s.m[c.h]; p == c {
		if c.next == nil {
			delete(s.m, c.h)
		} else {
			s.m[c.h] = c.next
		}
	} else {
		for p.next != c {
			p = p.next
		}
		p.next = c.next
	}
	c.next = nil
	s.n--
}

// each calls fn with every cell, in no order; fn may remove the cell it
// is given.
func (s *cells) each(fn func(*cell)) {
	for _, c := range s.m {
		for c != nil {
			next := c.next
			fn(c)
			c = next
		}
	}
}
