package state

import (
	"encoding/json"
	"fmt"
	"strings"
)

// View returns the committed state of key, for reading from outside the
// job (the admin server): each state's name and its value as JSON, a map
// state as an object of its live entries (a window's entries, whose names
// start with WindowPrefix, are not listed). Changes of batches not committed
// yet are not in it. The entries are copied under the table's read lock,
// which holds off only the commit loop's Apply, for a few map look-ups per
// state name and entry of key; they are encoded after it is released. An
// empty map: key has no live state.
func (t *Table) View(key string) (map[string]json.RawMessage, error) {
	type field struct {
		name, field string
		e           Entry
	}
	var values, entries []field
	t.mu.RLock()
	for name := range t.names {
		if e, ok := t.get(ID{name, key, ""}); ok && e.live() {
			values = append(values, field{name: name, e: e})
		}
		for f := range t.fields[nameKey{name, key}] {
			if e, ok := t.get(ID{name, key, f}); ok && e.live() {
				entries = append(entries, field{name: name, field: f, e: e})
			}
		}
	}
	t.mu.RUnlock()

	out := make(map[string]json.RawMessage, len(values)+len(entries))
	for _, v := range values {
		b, err := t.value(v.e)
		if err != nil {
			return nil, fmt.Errorf("state %q, key %q: encode: %w", v.name, key, err)
		}
		out[v.name] = b
	}
	maps := map[string]map[string]json.RawMessage{}
	for _, v := range entries {
		b, err := t.value(v.e)
		if err != nil {
			return nil, fmt.Errorf("state %q, key %q: encode: %w", v.name, key, err)
		}
		m := maps[v.name]
		if m == nil {
			m = map[string]json.RawMessage{}
			maps[v.name] = m
		}
		m[mapKey(v.field)] = b
	}
	for name, m := range maps {
		b, err := json.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("state %q, key %q: encode: %w", name, key, err)
		}
		out[name] = b
	}
	return out, nil
}

// value returns an entry's value as JSON: as loaded from the store, or
// encoded from the value a function set.
func (t *Table) value(e Entry) (json.RawMessage, error) {
	if e.Raw != nil && e.Val == nil {
		return e.Raw, nil
	}
	return t.encode(e.Val)
}

// mapKey returns a map state's key as a JSON object's key: a string key
// as itself, any other as its JSON (a number 3 as "3").
func mapKey(field string) string {
	var s string
	if strings.HasPrefix(field, `"`) && json.Unmarshal([]byte(field), &s) == nil {
		return s
	}
	return field
}
