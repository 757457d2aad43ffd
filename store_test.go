package kisflow

import (
	"testing"
	"time"
)

func TestStoreTTL(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	s := &store{now: func() time.Time { return now }}
	s.SetCache("short", 1, time.Second)
	s.SetCache("forever", 2, 0)
	if v, ok := s.Cache("short"); !ok || v != 1 {
		t.Fatalf("fresh: %v %v", v, ok)
	}
	now = now.Add(999 * time.Millisecond)
	if _, ok := s.Cache("short"); !ok {
		t.Fatal("expired early")
	}
	now = now.Add(time.Millisecond)
	if _, ok := s.Cache("short"); ok {
		t.Fatal("not expired at its TTL")
	}
	if v, ok := s.Cache("forever"); !ok || v != 2 {
		t.Fatal("entry without TTL expired")
	}
	// Expired entries are swept as new ones arrive.
	for i := range 2048 {
		s.SetCache(string(rune('a'+i%26))+time.Duration(i).String(), i, time.Nanosecond)
		now = now.Add(time.Microsecond)
	}
	if n := len(s.cache); n > 1100 {
		t.Fatalf("cache holds %d entries after sweeping", n)
	}
	s.SetMeta("k", "v")
	if s.Meta("k") != "v" || s.Meta("none") != nil {
		t.Fatal("meta")
	}
}
