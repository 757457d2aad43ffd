package remote

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// The load balancers.
const (
	Random         = "random"
	RoundRobin     = "round_robin"
	LeastActive    = "least_active"
	ConsistentHash = "consistent_hash"
)

// Balancer picks one provider of a list for a call. tried are the
// providers a call already tried (failover prefers others); key is the
// call's hash key (consistent_hash). Safe for concurrent use.
type Balancer interface {
	Pick(ps []Provider, key string, tried map[string]bool) Provider
}

// NewBalancer returns the load balancer called name. active counts the
// calls in flight per provider ID (least_active reads it).
func NewBalancer(name string, active *Active) (Balancer, error) {
	switch name {
	case Random, "":
		return randomLB{}, nil
	case RoundRobin:
		return &roundRobinLB{cur: map[string]int{}}, nil
	case LeastActive:
		return leastActiveLB{active: active}, nil
	case ConsistentHash:
		return &hashLB{}, nil
	}
	return nil, fmt.Errorf("loadbalance %q: want random, round_robin, least_active or consistent_hash", name)
}

// untried returns the providers not in tried, or all when every one was.
func untried(ps []Provider, tried map[string]bool) []Provider {
	if len(tried) == 0 {
		return ps
	}
	out := make([]Provider, 0, len(ps))
	for _, p := range ps {
		if !tried[p.ID] {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return ps
	}
	return out
}

// weightedRandom picks one of ps with probability proportional to weight.
func weightedRandom(ps []Provider) Provider {
	total := 0
	for _, p := range ps {
		total += p.weight()
	}
	n := rand.IntN(total)
	for _, p := range ps {
		if n -= p.weight(); n < 0 {
			return p
		}
	}
	return ps[len(ps)-1]
}

// randomLB picks at random, weighted.
type randomLB struct{}

func (randomLB) Pick(ps []Provider, _ string, tried map[string]bool) Provider {
	return weightedRandom(untried(ps, tried))
}

// roundRobinLB is smooth weighted round robin (nginx's, as dubbo's): over
// any run of total-weight picks each provider gets its weight's share,
// spread out rather than in bursts.
type roundRobinLB struct {
	mu  sync.Mutex
	cur map[string]int // provider ID -> current weight
}

func (b *roundRobinLB) Pick(ps []Provider, _ string, tried map[string]bool) Provider {
	ps = untried(ps, tried)
	b.mu.Lock()
	defer b.mu.Unlock()
	total, best := 0, -1
	for i, p := range ps {
		w := p.weight()
		total += w
		b.cur[p.ID] += w
		if best < 0 || b.cur[p.ID] > b.cur[ps[best].ID] {
			best = i
		}
	}
	b.cur[ps[best].ID] -= total
	if len(b.cur) > 4*len(ps)+16 {
		// Forget providers gone long ago.
		live := map[string]bool{}
		for _, p := range ps {
			live[p.ID] = true
		}
		for id := range b.cur {
			if !live[id] {
				delete(b.cur, id)
			}
		}
	}
	return ps[best]
}

// Active counts the calls in flight per provider ID.
type Active struct{ m sync.Map } // ID -> *atomic.Int64

func (a *Active) counter(id string) *atomic.Int64 {
	if c, ok := a.m.Load(id); ok {
		return c.(*atomic.Int64)
	}
	c, _ := a.m.LoadOrStore(id, new(atomic.Int64))
	return c.(*atomic.Int64)
}

// Of returns the calls in flight to provider id.
func (a *Active) Of(id string) int64 { return a.counter(id).Load() }

// leastActiveLB picks the provider with the fewest calls in flight; ties
// are broken at random, weighted.
type leastActiveLB struct{ active *Active }

func (b leastActiveLB) Pick(ps []Provider, _ string, tried map[string]bool) Provider {
	ps = untried(ps, tried)
	var least []Provider
	min := int64(-1)
	for _, p := range ps {
		n := b.active.Of(p.ID)
		switch {
		case min < 0 || n < min:
			min, least = n, append(least[:0], p)
		case n == min:
			least = append(least, p)
		}
	}
	return weightedRandom(least)
}

// VirtualNodes is how many points each provider has on the consistent
// hash ring (dubbo's 160).
const VirtualNodes = 160

// hashLB is a consistent hash ring of the providers' addresses with
// VirtualNodes points each: a key reaches the first point at or after its
// hash, so it keeps one provider while the set is stable, and when a
// provider joins or leaves only the keys of its arcs move.
type hashLB struct {
	mu   sync.Mutex
	sig  string
	ring *ring
}

type ring struct {
	points []uint64
	owner  []Provider
}

func hash64(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	x := h.Sum64()
	// fnv's low bits are weak for similar strings: mix (splitmix64).
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func newRing(ps []Provider) *ring {
	type pt struct {
		h uint64
		p Provider
	}
	pts := make([]pt, 0, len(ps)*VirtualNodes)
	for _, p := range ps {
		for i := range VirtualNodes {
			pts = append(pts, pt{hash64(p.Addr + "#" + strconv.Itoa(i)), p})
		}
	}
	slices.SortFunc(pts, func(a, b pt) int {
		switch {
		case a.h < b.h:
			return -1
		case a.h > b.h:
			return 1
		}
		return strings.Compare(a.p.Addr, b.p.Addr)
	})
	r := &ring{points: make([]uint64, len(pts)), owner: make([]Provider, len(pts))}
	for i, x := range pts {
		r.points[i], r.owner[i] = x.h, x.p
	}
	return r
}

func (b *hashLB) ringOf(ps []Provider) *ring {
	var sig strings.Builder
	for _, p := range ps {
		sig.WriteString(p.ID)
		sig.WriteByte(0)
		sig.WriteString(p.Addr)
		sig.WriteByte(0)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ring == nil || b.sig != sig.String() {
		b.sig, b.ring = sig.String(), newRing(ps)
	}
	return b.ring
}

func (b *hashLB) Pick(ps []Provider, key string, tried map[string]bool) Provider {
	r := b.ringOf(ps)
	h := hash64(key)
	i := sort.Search(len(r.points), func(i int) bool { return r.points[i] >= h })
	// The key's point, or the next points clockwise past the providers
	// already tried.
	for n := 0; n < len(r.points); n++ {
		p := r.owner[(i+n)%len(r.points)]
		if !tried[p.ID] {
			return p
		}
	}
	return r.owner[i%len(r.points)]
}
