package kisflow

import (
	"sync"
	"time"
)

// store is the cache with time-to-live and the metadata that flows,
// functions and connectors carry. It is safe for concurrent use.
type store struct {
	mu    sync.Mutex
	cache map[string]cacheEntry
	meta  map[string]any
	now   func() time.Time
	sets  int
}

type cacheEntry struct {
	value   any
	expires time.Time // zero: never
}

// Cache returns the cached value of key, if present and not expired.
func (s *store) Cache(key string) (any, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.cache[key]
	if !ok {
		return nil, false
	}
	if !e.expires.IsZero() && !s.clock().Before(e.expires) {
		delete(s.cache, key)
		return nil, false
	}
	return e.value, true
}

// SetCache caches value under key for ttl; ttl <= 0 keeps it until replaced.
// A nil value deletes key: Cache then reports it absent.
func (s *store) SetCache(key string, value any, ttl time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if value == nil {
		delete(s.cache, key)
		return
	}
	if s.cache == nil {
		s.cache = map[string]cacheEntry{}
	}
	e := cacheEntry{value: value}
	now := s.clock()
	if ttl > 0 {
		e.expires = now.Add(ttl)
	}
	s.cache[key] = e
	// Sweep expired entries now and then so a cache of short-lived keys
	// does not grow without bound.
	if s.sets++; s.sets%1024 == 0 {
		for k, e := range s.cache {
			if !e.expires.IsZero() && !now.Before(e.expires) {
				delete(s.cache, k)
			}
		}
	}
}

// Meta returns the metadata value of key, or nil.
func (s *store) Meta(key string) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.meta[key]
}

// SetMeta sets the metadata value of key; a nil value deletes it.
func (s *store) SetMeta(key string, value any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if value == nil {
		delete(s.meta, key)
		return
	}
	if s.meta == nil {
		s.meta = map[string]any{}
	}
	s.meta[key] = value
}

func (s *store) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}
