package file

import (
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/stream"
)

func open(t *testing.T, params map[string]string, resume string) stream.Source {
	t.Helper()
	d, err := NewFile(&config.Conn{CName: "f", Type: TypeFile, Params: params})
	if err != nil {
		t.Fatal(err)
	}
	src, err := d.(*File).OpenSource(context.Background(), stream.SourceOptions{Resume: resume})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close(context.Background()) })
	return src
}

// readAll reads one message per Read, so that each carries its position
// (a source sets it on the last message of a Read).
func readAll(t *testing.T, src stream.Source) []*stream.Message {
	t.Helper()
	var all []*stream.Message
	for {
		msgs, err := src.Read(context.Background(), 1)
		all = append(all, msgs...)
		if errors.Is(err, io.EOF) {
			return all
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// offsetOf is the byte offset of a message's position, without the
// file's identity.
func offsetOf(m *stream.Message) string {
	off, _, _ := strings.Cut(m.Position, "@")
	return off
}

func write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestJSONLinesWithPositionsAndResume(t *testing.T) {
	t.Parallel()
	content := "{\"a\":1}\n\n{\"a\":2}\r\n{\"a\":3}" // a blank line, CRLF, no final newline
	p := write(t, "in.jsonl", content)
	msgs := readAll(t, open(t, map[string]string{"path": p}, ""))
	if len(msgs) != 3 || msgs[0].Payload != `{"a":1}` || msgs[1].Payload != `{"a":2}` || msgs[2].Payload != `{"a":3}` {
		t.Fatalf("payloads: %v", msgs)
	}
	if offsetOf(msgs[0]) != "8" || offsetOf(msgs[1]) != "18" || offsetOf(msgs[2]) != "25" {
		t.Fatalf("positions: %s %s %s", msgs[0].Position, msgs[1].Position, msgs[2].Position)
	}
	rest := readAll(t, open(t, map[string]string{"path": p}, msgs[0].Position))
	if len(rest) != 2 || rest[0].Payload != `{"a":2}` {
		t.Fatalf("resumed: %v", rest)
	}
}

func TestPositionIsOnTheLastMessageOfARead(t *testing.T) {
	t.Parallel()
	p := write(t, "in.jsonl", "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n")
	src := open(t, map[string]string{"path": p}, "")
	msgs, err := src.Read(context.Background(), 2)
	if err != nil || len(msgs) != 2 || msgs[0].Position != "" || offsetOf(msgs[1]) != "16" {
		t.Fatalf("%v %v", msgs, err)
	}
}

func TestCSVGzip(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "in.csv.gz")
	f, _ := os.Create(p)
	zw := gzip.NewWriter(f)
	_, _ = io.WriteString(zw, "id,name,score\n1,ann,9.5\n2,\"bob, jr\",7\n")
	_ = zw.Close()
	_ = f.Close()
	msgs := readAll(t, open(t, map[string]string{"path": p}, ""))
	if len(msgs) != 2 {
		t.Fatalf("got %d messages", len(msgs))
	}
	m := msgs[1].Payload.(map[string]any)
	if m["id"] != int64(2) || m["name"] != "bob, jr" || m["score"] != int64(7) || msgs[0].Payload.(map[string]any)["score"] != 9.5 {
		t.Fatalf("records: %v %v", msgs[0].Payload, m)
	}
	rest := readAll(t, open(t, map[string]string{"path": p}, msgs[0].Position))
	if len(rest) != 1 || rest[0].Payload.(map[string]any)["name"] != "bob, jr" {
		t.Fatalf("resumed after the header: %v", rest)
	}
}

func TestFollowWaitsForNewLines(t *testing.T) {
	t.Parallel()
	p := write(t, "grow.jsonl", "{\"n\":1}\n{\"n\":")
	src := open(t, map[string]string{"path": p, "follow": "true", "poll": "5ms"}, "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msgs, err := src.Read(ctx, 10)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("first read: %v %v", msgs, err)
	}
	f, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	_, _ = f.WriteString("2}\n{\"n\":3}\n")
	_ = f.Close()
	var got []string
	for len(got) < 2 {
		msgs, err := src.Read(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			got = append(got, m.Payload.(string))
		}
	}
	if strings.Join(got, " ") != `{"n":2} {"n":3}` {
		t.Fatalf("got %v (a partial line must wait for its end)", got)
	}
	short, cancelShort := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancelShort()
	if _, err := src.Read(short, 10); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a following source at the end waits for ctx: %v", err)
	}
}

func TestSinkAppendsJSONLines(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "sub", "out.jsonl")
	d, err := NewFile(&config.Conn{CName: "f", Params: map[string]string{"path": p}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := d.(*File).Write(ctx, []any{map[string]any{"a": 1}, `{"b":2}`, "plain"}); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(p)
	if string(data) != "{\"a\":1}\n{\"b\":2}\n\"plain\"\n" {
		t.Fatalf("file: %q", data)
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	for _, params := range []map[string]string{
		{},
		{"path": "x.txt", "format": "xml"},
		{"path": "x", "poll": "soon"},
	} {
		if _, err := NewFile(&config.Conn{CName: "f", Params: params}); err == nil {
			t.Errorf("params %v: no error", params)
		}
	}
	d, _ := NewFile(&config.Conn{CName: "f", Params: map[string]string{"path": "/no/such/file.jsonl"}})
	if _, err := d.(*File).OpenSource(context.Background(), stream.SourceOptions{}); err == nil {
		t.Error("missing file: no error")
	}
	d, _ = NewFile(&config.Conn{CName: "f", Params: map[string]string{"path": write(t, "a.jsonl", "{}\n")}})
	if _, err := d.(*File).OpenSource(context.Background(), stream.SourceOptions{Resume: "-3"}); err == nil {
		t.Error("bad resume position: no error")
	}
}

func TestStdinSource(t *testing.T) {
	t.Parallel()
	d, err := NewStdin(&config.Conn{CName: "in", Params: map[string]string{"format": "csv"}})
	if err != nil {
		t.Fatal(err)
	}
	d.(*Stdin).in = strings.NewReader("a,b\n1,x\n2,y\n")
	src, err := d.(*Stdin).OpenSource(context.Background(), stream.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	msgs := readAll(t, src)
	if len(msgs) != 2 || msgs[1].Payload.(map[string]any)["b"] != "y" || msgs[1].Position != "" {
		t.Fatalf("stdin rows: %v", msgs)
	}
}
