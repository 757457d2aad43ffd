package generator

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/stream"
)

func TestGeneratesAndResumes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, format := range []string{"json", "map", "struct"} {
		d, err := New(&config.Conn{CName: "g", Params: map[string]string{"count": "10", "keys": "3", "format": format}})
		if err != nil {
			t.Fatal(err)
		}
		src, _ := d.(*Generator).OpenSource(ctx, stream.SourceOptions{Resume: "4"})
		msgs, err := src.Read(ctx, 100)
		if err != nil || len(msgs) != 6 {
			t.Fatalf("%s: %d messages, %v", format, len(msgs), err)
		}
		switch p := msgs[0].Payload.(type) {
		case string:
			if p != `{"id":5,"key":2}` {
				t.Fatalf("json row %q", p)
			}
		case map[string]any:
			if p["id"] != int64(5) {
				t.Fatalf("map row %v", p)
			}
		case *Row:
			if p.ID != 5 || p.Key != 2 {
				t.Fatalf("struct row %v", p)
			}
		}
		if msgs[5].Position != "10" || msgs[0].Key != "2" {
			t.Fatalf("%s: position %q key %q", format, msgs[5].Position, msgs[0].Key)
		}
		if _, err := src.Read(ctx, 1); !errors.Is(err, io.EOF) {
			t.Fatalf("after count: %v", err)
		}
	}
	if _, err := New(&config.Conn{Params: map[string]string{"format": "xml"}}); err == nil {
		t.Fatal("bad format: no error")
	}
}
