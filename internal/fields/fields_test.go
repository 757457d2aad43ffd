package fields

import "testing"

type inner struct {
	ID *int `json:"id"`
}

type row struct {
	Name  string         `json:"name"`
	Qty   int            `json:"qty,omitempty"`
	Tags  []string       `json:"tags"`
	In    inner          `json:"in"`
	Ptr   *inner         `json:"ptr"`
	Extra map[string]any `json:"extra"`
	Skip  string         `json:"-"`
	Any   any
}

func TestHas(t *testing.T) {
	t.Parallel()
	one := 1
	full := &row{Name: "a", Qty: 2, Tags: []string{}, In: inner{ID: &one}, Ptr: &inner{ID: &one}, Extra: map[string]any{"k": "v"}, Skip: "x", Any: 0}
	tests := []struct {
		name string
		row  any
		path []string
		want bool
	}{
		{"map field", map[string]any{"a": 1}, []string{"a"}, true},
		{"map null", map[string]any{"a": nil}, []string{"a"}, false},
		{"map absent", map[string]any{}, []string{"a"}, false},
		{"nested map", map[string]any{"a": map[string]any{"b": 0}}, []string{"a", "b"}, true},
		{"nested map absent", map[string]any{"a": map[string]any{}}, []string{"a", "b"}, false},
		{"nested in a scalar", map[string]any{"a": 1}, []string{"a", "b"}, false},
		{"string map", map[string]string{"a": ""}, []string{"a"}, true},
		{"string map nested", map[string]string{"a": ""}, []string{"a", "b"}, false},
		{"nil row", nil, []string{"a"}, false},
		{"scalar row", 42, []string{"a"}, false},
		{"struct by json name", *full, []string{"name"}, true},
		{"struct by Go name with a tag", full, []string{"Name"}, false},
		{"struct without a tag", full, []string{"Any"}, true},
		{"json:\"-\"", full, []string{"Skip"}, false},
		{"empty slice is not null", full, []string{"tags"}, true},
		{"nested struct pointer field", full, []string{"in", "id"}, true},
		{"through a pointer", full, []string{"ptr", "id"}, true},
		{"map in a struct", full, []string{"extra", "k"}, true},
		{"nil pointer row", (*row)(nil), []string{"name"}, false},
		{"nil slice", &row{}, []string{"tags"}, false},
		{"nil nested pointer", &row{}, []string{"ptr", "id"}, false},
		{"nil pointer in a struct", &row{}, []string{"in", "id"}, false},
		{"omitempty zero", &row{}, []string{"qty"}, false},
		{"zero without omitempty", &row{}, []string{"name"}, true},
		{"nil interface", &row{}, []string{"Any"}, false},
	}
	for _, tt := range tests {
		if got := Has(tt.row, tt.path); got != tt.want {
			t.Errorf("%s: Has(%v, %q) = %v, want %v", tt.name, tt.row, tt.path, got, tt.want)
		}
	}
}
