package kisflow

import (
	"errors"
	"fmt"
	"time"

	"github.com/kisflow-go/kisflow/internal/state"
)

// ErrNoState is returned (wrapped) by state methods called with a Flow
// that is not running a function of a Job.
var ErrNoState = errors.New("keyed state is available only inside a function run by a Job")

// ErrStateKey is returned (wrapped) when a function of a job with several
// workers uses state of a key its rows are not routed by: set stream.key
// to the field the state is keyed by.
var ErrStateKey = state.ErrNotOwned

// ErrStateUnkeyed is returned (wrapped) when a function of a job with
// several workers and no stream key uses state.
var ErrStateUnkeyed = state.ErrUnkeyed

// StateOption configures a ValueState or MapState.
type StateOption func(*stateOptions)

type stateOptions struct {
	ttl time.Duration
}

// StateTTL makes entries expire d after their last write (d <= 0: never,
// the default).
func StateTTL(d time.Duration) StateOption { return func(o *stateOptions) { o.ttl = d } }

func stateOpts(opts []StateOption) stateOptions {
	var o stateOptions
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	return o
}

// txnOf returns the state transaction of the function f runs.
func txnOf(f Flow, name string) (*state.Txn, *flow, error) {
	fl, ok := f.(*flow)
	if !ok || fl.state == nil {
		return nil, nil, fmt.Errorf("state %q: %w", name, ErrNoState)
	}
	return fl.state, fl, nil
}

// decodeEntry returns the value of an entry: as it was set, or decoded
// from the JSON loaded from the store.
func decodeEntry[T any](fl *flow, name string, e state.Entry) (T, error) {
	if e.Raw == nil || e.Val != nil {
		v, _ := e.Val.(T)
		return v, nil
	}
	var v T
	if err := fl.codec.Unmarshal(e.Raw, &v); err != nil {
		return v, fmt.Errorf("state %q: decode: %w", name, err)
	}
	return v, nil
}

// ValueState is one value of type T per stream key. Declare it once (a
// package-level variable is fine: it holds only its name and options) and
// use it inside functions run by a Job. Safe for concurrent use.
type ValueState[T any] struct {
	name string
	o    stateOptions
}

// NewValueState declares a value state. Names are per flow: two states of
// a flow must not share a name.
func NewValueState[T any](name string, opts ...StateOption) *ValueState[T] {
	return &ValueState[T]{name: name, o: stateOpts(opts)}
}

// Name is the state's name.
func (s *ValueState[T]) Name() string { return s.name }

// Get returns key's value, and false (with the zero T) when it has none or
// it expired.
func (s *ValueState[T]) Get(f Flow, key string) (T, bool, error) {
	var zero T
	x, fl, err := txnOf(f, s.name)
	if err != nil {
		return zero, false, err
	}
	e, ok, err := x.Get(state.ID{Name: s.name, Key: key})
	if err != nil || !ok {
		return zero, false, stateErr(s.name, err)
	}
	v, err := decodeEntry[T](fl, s.name, e)
	return v, err == nil, err
}

// Set sets key's value.
func (s *ValueState[T]) Set(f Flow, key string, v T) error {
	x, _, err := txnOf(f, s.name)
	if err != nil {
		return err
	}
	return stateErr(s.name, x.Put(state.ID{Name: s.name, Key: key}, v, s.o.ttl))
}

// Delete deletes key's value.
func (s *ValueState[T]) Delete(f Flow, key string) error {
	x, _, err := txnOf(f, s.name)
	if err != nil {
		return err
	}
	return stateErr(s.name, x.Delete(state.ID{Name: s.name, Key: key}))
}

func stateErr(name string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("state %q: %w", name, err)
}

// MapState is a map from K to V per stream key; each entry is stored (and
// expires) on its own, so a change writes only that entry. Map keys are
// stored as their JSON. Safe for concurrent use.
type MapState[K comparable, V any] struct {
	name string
	o    stateOptions
}

// NewMapState declares a map state. Names are per flow: two states of a
// flow must not share a name.
func NewMapState[K comparable, V any](name string, opts ...StateOption) *MapState[K, V] {
	return &MapState[K, V]{name: name, o: stateOpts(opts)}
}

// Name is the state's name.
func (s *MapState[K, V]) Name() string { return s.name }

func (s *MapState[K, V]) id(fl *flow, key string, mk K) (state.ID, error) {
	b, err := fl.codec.Marshal(mk)
	if err != nil {
		return state.ID{}, fmt.Errorf("state %q: encode map key: %w", s.name, err)
	}
	return state.ID{Name: s.name, Key: key, Field: string(b)}, nil
}

// Get returns the value of mk in key's map, and false when it has none.
func (s *MapState[K, V]) Get(f Flow, key string, mk K) (V, bool, error) {
	var zero V
	x, fl, err := txnOf(f, s.name)
	if err != nil {
		return zero, false, err
	}
	id, err := s.id(fl, key, mk)
	if err != nil {
		return zero, false, err
	}
	e, ok, err := x.Get(id)
	if err != nil || !ok {
		return zero, false, stateErr(s.name, err)
	}
	v, err := decodeEntry[V](fl, s.name, e)
	return v, err == nil, err
}

// Put sets mk to v in key's map.
func (s *MapState[K, V]) Put(f Flow, key string, mk K, v V) error {
	x, fl, err := txnOf(f, s.name)
	if err != nil {
		return err
	}
	id, err := s.id(fl, key, mk)
	if err != nil {
		return err
	}
	return stateErr(s.name, x.Put(id, v, s.o.ttl))
}

// Remove removes mk from key's map.
func (s *MapState[K, V]) Remove(f Flow, key string, mk K) error {
	x, fl, err := txnOf(f, s.name)
	if err != nil {
		return err
	}
	id, err := s.id(fl, key, mk)
	if err != nil {
		return err
	}
	return stateErr(s.name, x.Delete(id))
}

// All returns a copy of key's map (empty when it has no entries).
func (s *MapState[K, V]) All(f Flow, key string) (map[K]V, error) {
	x, fl, err := txnOf(f, s.name)
	if err != nil {
		return nil, err
	}
	fields, err := x.Fields(s.name, key)
	if err != nil {
		return nil, stateErr(s.name, err)
	}
	out := make(map[K]V, len(fields))
	for _, field := range fields {
		e, ok, err := x.Get(state.ID{Name: s.name, Key: key, Field: field})
		if err != nil {
			return nil, stateErr(s.name, err)
		}
		if !ok {
			continue
		}
		var mk K
		if err := fl.codec.Unmarshal([]byte(field), &mk); err != nil {
			return nil, fmt.Errorf("state %q: decode map key: %w", s.name, err)
		}
		v, err := decodeEntry[V](fl, s.name, e)
		if err != nil {
			return nil, err
		}
		out[mk] = v
	}
	return out, nil
}

// Clear removes every entry of key's map.
func (s *MapState[K, V]) Clear(f Flow, key string) error {
	x, _, err := txnOf(f, s.name)
	if err != nil {
		return err
	}
	fields, err := x.Fields(s.name, key)
	if err != nil {
		return stateErr(s.name, err)
	}
	for _, field := range fields {
		if err := x.Delete(state.ID{Name: s.name, Key: key, Field: field}); err != nil {
			return stateErr(s.name, err)
		}
	}
	return nil
}
