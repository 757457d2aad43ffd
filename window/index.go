package window

import "hash/maphash"

// inlineKey is the longest group key an index slot holds itself.
const inlineKey = 19

// index maps the group keys of a window to their positions. It is an
// open-addressing table of 32-byte slots that hold keys of up to
// inlineKey bytes (a number, a short string, two small numbers), so that a
// lookup reads one cache line; longer keys go to a Go map. With 100k groups
// a window's table does not fit in the cache, and a Go map of strings
// reads three lines (control word, slot, key bytes).
type index struct {
	seed  maphash.Seed
	slots []slot // a power of two long
	n     int
	long  map[string]int32
}

type slot struct {
	hash uint64 // 0: empty
	pos  int32
	klen uint8
	key  [inlineKey]byte
}

func newIndex(seed maphash.Seed, hint int) *index {
	size := 8
	for size*3 < hint*4 {
		size *= 2
	}
	return &index{seed: seed, slots: make([]slot, size)}
}

// find returns the position of key, or false.
func (x *index) find(key []byte) (int32, bool) {
	if len(key) > inlineKey {
		p, ok := x.long[string(key)]
		return p, ok
	}
	return x.findHash(key, x.hash(key))
}

// findHash is find of an inline key whose hash (see hash) is h.
func (x *index) findHash(key []byte, h uint64) (int32, bool) {
	mask := uint64(len(x.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		s := &x.slots[i]
		if s.hash == 0 {
			return 0, false
		}
		if s.hash == h && int(s.klen) == len(key) && string(s.key[:s.klen]) == string(key) {
			return s.pos, true
		}
	}
}

// add records key at pos; key must not be in x.
func (x *index) add(key []byte, pos int32) {
	if len(key) > inlineKey {
		if x.long == nil {
			x.long = map[string]int32{}
		}
		x.long[string(key)] = pos
		return
	}
	if (x.n+1)*4 > len(x.slots)*3 {
		x.grow()
	}
	s := slot{hash: x.hash(key), pos: pos, klen: uint8(len(key))}
	copy(s.key[:], key)
	x.put(s)
	x.n++
}

// grow doubles the table.
func (x *index) grow() {
	old := x.slots
	x.slots = make([]slot, len(old)*2)
	for i := range old {
		if old[i].hash != 0 {
			x.put(old[i])
		}
	}
}

func (x *index) put(s slot) {
	mask := uint64(len(x.slots) - 1)
	i := s.hash & mask
	for x.slots[i].hash != 0 {
		i = (i + 1) & mask
	}
	x.slots[i] = s
}

// hash returns the hash of an inline key, never 0.
func (x *index) hash(key []byte) uint64 { return maphash.Bytes(x.seed, key) | 1 }

// touch reads the slot where a lookup of hash h starts, so that it is in
// the cache when findHash looks; it returns something of it, for the
// caller to keep (a load whose value is unused may be left out).
func (x *index) touch(h uint64) uint64 {
	return x.slots[h&uint64(len(x.slots)-1)].hash
}

// findOrAdd returns the position of key, or records key at pos and returns
// pos and false.
func (x *index) findOrAdd(key []byte, pos int32) (int32, bool) {
	if len(key) > inlineKey {
		if p, ok := x.long[string(key)]; ok {
			return p, true
		}
		x.add(key, pos)
		return pos, false
	}
	if (x.n+1)*4 > len(x.slots)*3 {
		x.grow()
	}
	h := x.hash(key)
	mask := uint64(len(x.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		s := &x.slots[i]
		if s.hash == 0 {
			*s = slot{hash: h, pos: pos, klen: uint8(len(key))}
			copy(s.key[:], key)
			x.n++
			return pos, false
		}
		if s.hash == h && int(s.klen) == len(key) && string(s.key[:s.klen]) == string(key) {
			return s.pos, true
		}
	}
}
