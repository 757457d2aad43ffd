package state

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"strconv"
	"testing"

	"github.com/kisflow-go/kisflow/stream"
)

type named int

func (named) MarshalJSON() ([]byte, error) { return []byte(`"named"`), nil }

// TestAppendJSONIsEncodingJSON checks that the fast encoding writes the
// very bytes of encoding/json for every type it takes, and leaves the
// others (and the strings that need escaping) to the codec.
func TestAppendJSONIsEncodingJSON(t *testing.T) {
	t.Parallel()
	vals := []any{
		0, 1, -1, math.MaxInt64, math.MinInt64, int8(-128), int16(32767), int32(-5), int64(42),
		uint(7), uint8(255), uint16(65535), uint32(math.MaxUint32), uint64(math.MaxUint64),
		true, false,
		0.0, math.Copysign(0, -1), 1.5, -2.25, 123456.789, 1e-6, 9.99e-7, 1e-7, 1e20, 1e21, 1.5e300, 5e-324,
		math.MaxFloat64, math.SmallestNonzeroFloat64,
		float32(0.1), float32(1e-7), float32(3.4e38), float32(-1.25),
		"", "plain", "with space", "x-y_z.0~",
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		vals = append(vals, r.Int64()>>r.IntN(64), r.NormFloat64()*math.Pow(10, float64(r.IntN(60)-30)), float32(r.NormFloat64()))
	}
	for _, v := range vals {
		want, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := appendJSON([]byte("prefix"), v)
		if !ok {
			t.Fatalf("%T %v not taken", v, v)
		}
		if !bytes.Equal(got, append([]byte("prefix"), want...)) {
			t.Fatalf("%T %v: %s, encoding/json %s", v, v, got[6:], want)
		}
		// It decodes to the value it encodes.
		back := reflect.New(reflect.TypeOf(v))
		if err := json.Unmarshal(got[6:], back.Interface()); err != nil || !reflect.DeepEqual(back.Elem().Interface(), v) {
			t.Fatalf("%T %v decodes to %v (%v)", v, v, back.Elem().Interface(), err)
		}
	}
	for _, v := range []any{"quote\"", "back\\slash", "<tag>", "a&b", "tab\t", "é", "\x7f", math.NaN(), math.Inf(1),
		named(1), []int{1}, map[string]int{"a": 1}, struct{ A int }{1}, nil} {
		if got, ok := appendJSON([]byte("p"), v); ok || string(got) != "p" {
			t.Fatalf("%T %v taken as %q", v, v, got)
		}
	}
}

// TestChangesEncodeAsTheCodec checks that a committed batch stores every
// value as the codec would (the fast encoding for common types, the codec
// for the rest), that entries loaded from a store written by the codec
// alone (earlier versions) read back, and that values encoded into the
// shared buffer do not overwrite each other.
func TestChangesEncodeAsTheCodec(t *testing.T) {
	t.Parallel()
	vals := map[string]any{
		"int": 7, "float": 2.5, "string": "abc", "escaped": "a\"b", "bool": true,
		"struct": struct{ A, B int }{1, 2}, "map": map[string]float64{"x": 1}, "named": named(3), "uint8": uint8(9),
	}
	tb := New(1, json.Marshal)
	x := tb.Begin(0)
	for k, v := range vals {
		if err := x.Put(ID{Name: "n", Key: k}, v, 0); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5000 { // enough to fill several buffers
		_ = x.Put(ID{Name: "many", Key: string(rune('a' + i%26)), Field: strconv.Itoa(i)}, i*1000003, 0)
	}
	changes, err := tb.Changes([]*Txn{x})
	if err != nil {
		t.Fatal(err)
	}
	later := New(1, json.Marshal)
	for _, c := range changes {
		if c.Name == "many" {
			continue
		}
		want, _ := json.Marshal(vals[c.Key])
		if !bytes.Equal(c.Value, want) {
			t.Errorf("%s stored as %s, want %s", c.Key, c.Value, want)
		}
		if err := later.Load(c); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range changes {
		if c.Name != "many" {
			continue
		}
		e, ok, _ := x.Get(ID{Name: c.Name, Key: c.Key, Field: c.Field})
		if want, _ := json.Marshal(e.Val); !ok || !bytes.Equal(c.Value, want) {
			t.Fatalf("%s/%q stored as %s, want %s", c.Key, c.Field, c.Value, want)
		}
	}
	// Entries a store gave back (written by the codec alone, as earlier
	// versions did) are read as JSON.
	old := New(1, json.Marshal)
	for k, v := range vals {
		raw, _ := json.Marshal(v)
		if err := old.Load(stream.StateChange{Name: "n", Key: k, Value: raw}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tbl := range []*Table{later, old} {
		r := tbl.Begin(0)
		for k, v := range vals {
			e, ok, err := r.Get(ID{Name: "n", Key: k})
			if err != nil || !ok || e.Raw == nil {
				t.Fatalf("%s: %+v %v %v", k, e, ok, err)
			}
			back := reflect.New(reflect.TypeOf(v))
			if k == "named" {
				continue // its MarshalJSON has no UnmarshalJSON
			}
			if err := json.Unmarshal(e.Raw, back.Interface()); err != nil || !reflect.DeepEqual(back.Elem().Interface(), v) {
				t.Fatalf("%s loads as %v (%v), want %v", k, back.Elem().Interface(), err, v)
			}
		}
	}
}
