package file

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
	src, _ := openLog(t, params, resume)
	return src
}

// openLog opens a file source whose log is the returned buffer; it is
// written by the goroutine that calls Read.
func openLog(t *testing.T, params map[string]string, resume string) (stream.Source, *bytes.Buffer) {
	t.Helper()
	d, err := NewFile(&config.Conn{CName: "f", Type: TypeFile, Params: params})
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	src, err := d.(*File).OpenSource(context.Background(), stream.SourceOptions{Resume: resume, Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close(context.Background()) })
	return src, &log
}

// ids writes JSON lines {"id":from} to {"id":to}.
func ids(from, to int) string {
	var b strings.Builder
	for i := from; i <= to; i++ {
		fmt.Fprintf(&b, "{\"id\":%d}\n", i)
	}
	return b.String()
}

// payloads are the messages' payloads, space separated.
func payloads(msgs []*stream.Message) string {
	var b strings.Builder
	for i, m := range msgs {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprint(&b, m.Payload)
	}
	return b.String()
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

// Every message carries the position after its own line, whatever the
// Read it came in: a position identifies its message (dead letters keep
// their identity across restarts).
func TestEveryMessageCarriesItsOwnPosition(t *testing.T) {
	t.Parallel()
	p := write(t, "in.jsonl", "{\"a\":1}\n{\"a\":2}\n\n{\"a\":3}\n")
	src := open(t, map[string]string{"path": p}, "")
	if mp, ok := src.(stream.MessagePositions); !ok || !mp.PositionsPerMessage() {
		t.Fatal("the file source does not say it sets a position on every message")
	}
	msgs, err := src.Read(context.Background(), 3)
	if err != nil || len(msgs) != 3 || offsetOf(msgs[0]) != "8" || offsetOf(msgs[1]) != "16" || offsetOf(msgs[2]) != "25" {
		t.Fatalf("%v %v", msgs, err)
	}
	_, id0, fp0, err0 := parsePosition(msgs[0].Position)
	_, id2, fp2, err2 := parsePosition(msgs[2].Position)
	if err0 != nil || err2 != nil || id0 == "" || id0 != id2 {
		t.Fatalf("positions %q %q do not name the file", msgs[0].Position, msgs[2].Position)
	}
	if len(fp0) != 8 || len(fp2) != 8 || fp0 == fp2 {
		t.Fatalf("positions %q %q do not carry the fingerprints of the content before them", msgs[0].Position, msgs[2].Position)
	}
	one := readAll(t, open(t, map[string]string{"path": p}, ""))
	for i := range one {
		if one[i].Position != msgs[i].Position {
			t.Fatalf("message %d: position %q read alone, %q in a batch", i, one[i].Position, msgs[i].Position)
		}
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

// TestResumeChecksTheFile resumes a position on a file that is not the
// one it was committed for: replaced (another file moved over the path,
// as `mv new.jsonl in.jsonl`), truncated and rewritten shorter, or a
// compressed file shorter than the offset. Each is read from its
// beginning, every row once, with a warning naming the file; a plain
// offset (as earlier versions stored it) on the same file still resumes
// there, and the positions read after it name the file.
func TestResumeChecksTheFile(t *testing.T) {
	t.Parallel()
	gzipped := func(t *testing.T, p, content string) {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		_, _ = io.WriteString(zw, content)
		_ = zw.Close()
		if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		file   string
		change func(t *testing.T, p string) // after the first read
		resume func(first []*stream.Message) string
		want   string // the payloads read on resuming
		warn   string // "" for none
	}{
		{name: "replaced", file: "in.jsonl",
			change: func(t *testing.T, p string) {
				n := filepath.Join(filepath.Dir(p), "new.jsonl")
				if err := os.WriteFile(n, []byte(ids(5001, 7000)), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(n, p); err != nil {
					t.Fatal(err)
				}
			},
			resume: func(first []*stream.Message) string { return first[len(first)-1].Position },
			want:   strings.TrimSpace(strings.ReplaceAll(ids(5001, 7000), "\n", " ")),
			warn:   "is not the file the position was committed for (replaced or rotated): reading it from the beginning"},
		{name: "truncated", file: "in.jsonl",
			change: func(t *testing.T, p string) {
				if err := os.WriteFile(p, []byte(ids(9001, 9010)), 0o644); err != nil { // the same inode
					t.Fatal(err)
				}
			},
			resume: func(first []*stream.Message) string { return first[len(first)-1].Position },
			want:   strings.TrimSpace(strings.ReplaceAll(ids(9001, 9010), "\n", " ")),
			warn:   "is shorter than the committed position"},
		{name: "truncated and written again", file: "in.jsonl",
			change: func(t *testing.T, p string) {
				if err := os.WriteFile(p, []byte(ids(9001, 9600)), 0o644); err != nil { // the same inode, longer than the offset
					t.Fatal(err)
				}
			},
			resume: func(first []*stream.Message) string { return first[499].Position },
			want:   strings.TrimSpace(strings.ReplaceAll(ids(9001, 9600), "\n", " ")),
			warn:   "changed before the committed position"},
		{name: "rewritten in place, same size", file: "in.jsonl",
			change: func(t *testing.T, p string) {
				f, err := os.OpenFile(p, os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if _, err := f.WriteAt([]byte(`{"id":7}`), 0); err != nil { // was {"id":1}
					t.Fatal(err)
				}
			},
			resume: func(first []*stream.Message) string { return first[997].Position },
			want:   `{"id":7} ` + strings.TrimSpace(strings.ReplaceAll(ids(2, 1000), "\n", " ")),
			warn:   "changed before the committed position"},
		{name: "gzip written again", file: "in.jsonl.gz",
			change: func(t *testing.T, p string) { gzipped(t, p, ids(20001, 21000)) },
			resume: func(first []*stream.Message) string { return first[499].Position },
			want:   strings.TrimSpace(strings.ReplaceAll(ids(20001, 21000), "\n", " ")),
			warn:   "changed before the committed position"},
		{name: "appended", file: "in.jsonl",
			change: func(t *testing.T, p string) {
				f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if _, err := f.WriteString(ids(1001, 1002)); err != nil {
					t.Fatal(err)
				}
			},
			resume: func(first []*stream.Message) string { return first[999].Position },
			want:   `{"id":1001} {"id":1002}`},
		{name: "gzip appended", file: "in.jsonl.gz",
			change: func(t *testing.T, p string) { gzipped(t, p, ids(1, 1002)) },
			resume: func(first []*stream.Message) string { return first[999].Position },
			want:   `{"id":1001} {"id":1002}`},
		{name: "gzip shorter", file: "in.jsonl.gz",
			change: func(t *testing.T, p string) { gzipped(t, p, ids(9001, 9002)) },
			resume: func(first []*stream.Message) string { return offsetOf(first[len(first)-1]) },
			want:   `{"id":9001} {"id":9002}`,
			warn:   "is shorter than the committed position"},
		{name: "plain offset", file: "in.jsonl",
			change: func(*testing.T, string) {},
			resume: func(first []*stream.Message) string { return offsetOf(first[997]) },
			want:   `{"id":999} {"id":1000}`},
		{name: "no fingerprint", file: "in.jsonl", // OFFSET@DEV:INODE, as an earlier version wrote it
			change: func(*testing.T, string) {},
			resume: func(first []*stream.Message) string {
				pos := first[997].Position
				return pos[:strings.LastIndexByte(pos, ':')]
			},
			want: `{"id":999} {"id":1000}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := filepath.Join(t.TempDir(), tc.file)
			if strings.HasSuffix(p, ".gz") {
				gzipped(t, p, ids(1, 1000))
			} else if err := os.WriteFile(p, []byte(ids(1, 1000)), 0o644); err != nil {
				t.Fatal(err)
			}
			first := readAll(t, open(t, map[string]string{"path": p}, ""))
			if len(first) != 1000 {
				t.Fatalf("first read: %d rows", len(first))
			}
			tc.change(t, p)
			src, log := openLog(t, map[string]string{"path": p}, tc.resume(first))
			got := readAll(t, src)
			if payloads(got) != tc.want {
				t.Errorf("resumed: %d rows, from %v to %v", len(got), got[0].Payload, got[len(got)-1].Payload)
			}
			if logged := log.String(); tc.warn == "" && logged != "" || tc.warn != "" && (!strings.Contains(logged, tc.warn) || !strings.Contains(logged, p)) {
				t.Errorf("log %q, want %q naming the file", log.String(), tc.warn)
			}
			if last := got[len(got)-1].Position; !strings.Contains(last, "@") {
				t.Errorf("position %q does not name the file", last)
			}
		})
	}
}

// TestFollowSwitchesToTheNewFile follows a file that is rotated (renamed,
// a new file created at the path) or truncated and rewritten: the source
// reads the old file to its end (its last line even without a newline),
// then the file at the path from its start, with one warning.
func TestFollowSwitchesToTheNewFile(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, p string) // after rows 1 and 2 are read
		want   string
		warn   string
	}{
		{name: "rotated",
			change: func(t *testing.T, p string) {
				f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = f.WriteString("{\"id\":3}\n{\"id\":4}") // the writer's last line, no newline
				_ = f.Close()
				if err := os.Rename(p, p+".1"); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(ids(10, 12)), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			want: `{"id":3} {"id":4} {"id":10} {"id":11} {"id":12}`,
			warn: "was rotated"},
		{name: "truncated",
			change: func(t *testing.T, p string) {
				if err := os.WriteFile(p, []byte(ids(7, 7)), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			want: `{"id":7}`,
			warn: "was truncated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := write(t, "in.jsonl", ids(1, 2))
			src, log := openLog(t, map[string]string{"path": p, "follow": "true", "poll": "5ms"}, "")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var got []*stream.Message
			for len(got) < 2 {
				msgs, err := src.Read(ctx, 10)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, msgs...)
			}
			tc.change(t, p)
			got = nil
			for want := strings.Count(tc.want, " ") + 1; len(got) < want; {
				msgs, err := src.Read(ctx, 10)
				if err != nil {
					t.Fatalf("after %s: %v (read %s)", tc.name, err, payloads(got))
				}
				got = append(got, msgs...)
			}
			if payloads(got) != tc.want {
				t.Fatalf("read %s, want %s", payloads(got), tc.want)
			}
			if n := strings.Count(log.String(), tc.warn); n != 1 || !strings.Contains(log.String(), p) {
				t.Errorf("log %q: want %q once, naming the file", log.String(), tc.warn)
			}
			// The last position names the file now at the path:
			// resuming there reads only what is appended after it.
			f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = f.WriteString("{\"id\":99}\n")
			_ = f.Close()
			resumed, log2 := openLog(t, map[string]string{"path": p}, got[len(got)-1].Position)
			if rest := readAll(t, resumed); payloads(rest) != `{"id":99}` || log2.Len() > 0 {
				t.Errorf("resumed at %s: %s, log %q", got[len(got)-1].Position, payloads(rest), log2.String())
			}
		})
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

// TestStdinKeptOpen: rows piped to stdin are read while the writer keeps
// it open: a read returns the lines at hand, and a read that finds nothing
// gives up with its context (the runtime's linger) instead of blocking
// until the end of input. A line cut by a give-up is whole at the next
// read.
func TestStdinKeptOpen(t *testing.T) {
	t.Parallel()
	d, err := NewStdin(&config.Conn{CName: "in"})
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	d.(*Stdin).in = pr
	src, err := d.(*Stdin).OpenSource(context.Background(), stream.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close(context.Background())
	go func() {
		var b strings.Builder
		for i := range 200 {
			fmt.Fprintf(&b, `{"i":%d}`+"\n", i)
		}
		_, _ = pw.Write([]byte(b.String() + `{"i":`))
	}()
	read := func(wait time.Duration) ([]*stream.Message, error) {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		return src.Read(ctx, 1000)
	}
	var got []*stream.Message
	for len(got) < 200 {
		msgs, err := read(5 * time.Second)
		if err != nil || len(msgs) == 0 {
			t.Fatalf("after %d rows with stdin open: %d rows, %v", len(got), len(msgs), err)
		}
		got = append(got, msgs...)
	}
	if msgs, err := read(50 * time.Millisecond); len(msgs) != 0 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a read with nothing whole to read: %d rows, %v", len(msgs), err)
	}
	go func() {
		_, _ = pw.Write([]byte("200}\n"))
		pw.Close()
	}()
	msgs, err := read(5 * time.Second)
	if len(msgs) != 1 || fmt.Sprint(msgs[0].Payload) != `{"i":200}` {
		t.Fatalf("the cut line: %v %v", msgs, err)
	}
	if err == nil {
		msgs, err = read(5 * time.Second)
	}
	if len(msgs) != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("at the end of input: %d rows, %v", len(msgs), err)
	}
}

// A file emptied (`: > in.jsonl`) is read from its beginning, and nothing
// is read, so the committed position stays where it was; once rows are
// appended past that offset, the position must not be resumed at: the
// content before it is not the one it was committed after.
func TestEmptiedThenRefilledFileIsReadFromItsBeginning(t *testing.T) {
	t.Parallel()
	p := write(t, "in.jsonl", ids(1, 200))
	first := readAll(t, open(t, map[string]string{"path": p}, ""))
	pos := first[len(first)-1].Position
	if err := os.Truncate(p, 0); err != nil {
		t.Fatal(err)
	}
	src, log := openLog(t, map[string]string{"path": p}, pos)
	if got := readAll(t, src); len(got) != 0 || !strings.Contains(log.String(), "is shorter than the committed position") {
		t.Fatalf("emptied file: read %s, log %q", payloads(got), log.String())
	}
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(ids(1001, 1300)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	src, log = openLog(t, map[string]string{"path": p}, pos)
	got := readAll(t, src)
	if want := strings.TrimSpace(strings.ReplaceAll(ids(1001, 1300), "\n", " ")); payloads(got) != want {
		t.Fatalf("refilled file: read %d rows, from %v", len(got), got[0].Payload)
	}
	if !strings.Contains(log.String(), "changed before the committed position") {
		t.Errorf("no warning: %q", log.String())
	}
}

func TestParsePosition(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		pos, id, fp string
		offset      int64
		bad         bool
	}{
		{pos: ""},
		{pos: "12", offset: 12},
		{pos: "12@66:77", offset: 12, id: "66:77"},
		{pos: "12@66:77:0a1b2c3d", offset: 12, id: "66:77", fp: "0a1b2c3d"},
		{pos: "12@:0a1b2c3d", offset: 12, fp: "0a1b2c3d"}, // no identity on this system
		{pos: "-3", bad: true},
		{pos: "x@66:77", bad: true},
		{pos: "12@66:77:", bad: true},
	} {
		offset, id, fp, err := parsePosition(c.pos)
		if (err != nil) != c.bad || !c.bad && (offset != c.offset || id != c.id || fp != c.fp) {
			t.Errorf("%q: %d %q %q %v", c.pos, offset, id, fp, err)
		}
	}
}

// The identity a file gives the key of a flow's position stays the same
// when its folder is renamed and when another file is put at its path,
// and differs for a file of the same name in another folder; a folder
// that does not exist gives none (the key is then made from the path).
func TestIdentitySurvivesAMoveOfTheFolder(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	if info, err := os.Stat(root); err != nil || identity(info) == "" {
		t.Skip("no inode numbers on this system")
	}
	identityOf := func(path string) string {
		t.Helper()
		d, err := NewFile(&config.Conn{CName: "f", Type: TypeFile, Params: map[string]string{"path": path}})
		if err != nil {
			t.Fatal(err)
		}
		return d.(*File).Identity()
	}
	for _, dir := range []string{"a", "b"} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, dir, "in.jsonl"), []byte(ids(1, 3)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	a := identityOf(filepath.Join(root, "a", "in.jsonl"))
	if !strings.HasPrefix(a, "dir=") || !strings.HasSuffix(a, "/in.jsonl") {
		t.Fatalf("identity %q", a)
	}
	if b := identityOf(filepath.Join(root, "b", "in.jsonl")); b == a {
		t.Fatalf("two folders, one identity %q", a)
	}
	if err := os.Rename(filepath.Join(root, "a"), filepath.Join(root, "moved")); err != nil {
		t.Fatal(err)
	}
	if moved := identityOf(filepath.Join(root, "moved", "in.jsonl")); moved != a {
		t.Fatalf("moved folder: %q, was %q", moved, a)
	}
	next := filepath.Join(root, "moved", "new.jsonl")
	if err := os.WriteFile(next, []byte(ids(4, 5)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(next, filepath.Join(root, "moved", "in.jsonl")); err != nil {
		t.Fatal(err)
	}
	if replaced := identityOf(filepath.Join(root, "moved", "in.jsonl")); replaced != a {
		t.Fatalf("replaced file: %q, was %q", replaced, a)
	}
	if none := identityOf(filepath.Join(root, "none", "in.jsonl")); none != "" {
		t.Fatalf("missing folder: %q", none)
	}
}

// An Excel export starts with a UTF-8 byte order mark: it is not part of
// the first column's name.
func TestCSVByteOrderMark(t *testing.T) {
	t.Parallel()
	p := write(t, "bom.csv", "\ufeffid,name\n1,ann\n")
	msgs := readAll(t, open(t, map[string]string{"path": p}, ""))
	if len(msgs) != 1 || msgs[0].Payload.(map[string]any)["id"] != int64(1) {
		t.Fatalf("records: %v", msgs)
	}
}

// A bounded run leaves a last line without its newline that does not
// parse (a row the writer has not finished) for the next run: the
// position stays before it, and the next run reads the whole row once.
// A CSV record with too few fields counts as unfinished too.
func TestBoundedRunLeavesAHalfWrittenLastLine(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, first, rest string
		want, then        string
	}{
		{"in.jsonl", "{\"id\":1}\n{\"id\":2", "5}\n{\"id\":3}\n", `{"id":1}`, `{"id":25} {"id":3}`},
		{"in.csv", "id,name\n1,a\n2", ",b\n3,c\n", "map[id:1 name:a]", "map[id:2 name:b] map[id:3 name:c]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := write(t, tc.name, tc.first)
			src, log := openLog(t, map[string]string{"path": p}, "")
			got := readAll(t, src)
			if payloads(got) != tc.want {
				t.Fatalf("first run: %q, want %q", payloads(got), tc.want)
			}
			warn := "the last line of " + p + " has no newline and does not parse: left for the next run"
			if !strings.Contains(log.String(), warn) {
				t.Fatalf("no warning %q in the log:\n%s", warn, log)
			}
			f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteString(tc.rest); err != nil {
				t.Fatal(err)
			}
			f.Close()
			src, log = openLog(t, map[string]string{"path": p}, got[len(got)-1].Position)
			if got := payloads(readAll(t, src)); got != tc.then {
				t.Fatalf("second run: %q, want %q", got, tc.then)
			}
			if log.Len() != 0 {
				t.Fatalf("second run logged:\n%s", log)
			}
		})
	}
}

// longLine is a JSON line of about n bytes, id first, whose text varies
// along its length so that a piece of it in the wrong place shows.
func longLine(id, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "{\"id\":%d,\"user\":%d,\"text\":\"", id, id)
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "%08d ", i)
	}
	b.WriteString("\"}")
	return b.String()
}

// longLinesFile is short lines with lines of 300 KiB, 1 MiB and 5 MiB
// between them (the reader's buffer is 256 KiB), its lines and the offset
// after each.
func longLinesFile() (content string, lines []string, ends []int64) {
	var b strings.Builder
	add := func(l string) {
		b.WriteString(l)
		b.WriteByte('\n')
		lines = append(lines, l)
		ends = append(ends, int64(b.Len()))
	}
	id := 1
	for _, n := range []int{300 << 10, 1 << 20, 5 << 20, 256<<10 - 20, 256<<10 + 56} {
		add(fmt.Sprintf("{\"id\":%d,\"qty\":1}", id))
		add(longLine(id+1, n))
		add(fmt.Sprintf("{\"id\":%d,\"user\":%d,\"qty\":2}", id+2, id+2))
		id += 3
	}
	return b.String(), lines, ends
}

// checkLong reports the first message that is not its line intact, or
// whose position is not the offset after its line; from is the index of
// the first message's line.
func checkLong(t *testing.T, msgs []*stream.Message, lines []string, ends []int64, from int) {
	t.Helper()
	if len(msgs) != len(lines)-from {
		t.Fatalf("%d messages, want %d", len(msgs), len(lines)-from)
	}
	for i, m := range msgs {
		want := lines[from+i]
		if got, _ := m.Payload.(string); got != want {
			pre := 0
			for pre < len(got) && pre < len(want) && got[pre] == want[pre] {
				pre++
			}
			t.Fatalf("message %d: %d bytes, want %d, differing from byte %d: %.60q", from+i, len(got), len(want), pre, got[min(pre, len(got)):])
		}
		if off := offsetOf(m); off != fmt.Sprint(ends[from+i]) {
			t.Fatalf("message %d: position %s, want offset %d", from+i, m.Position, ends[from+i])
		}
	}
}

// TestLongLinesAreReadIntact reads lines longer than the reader's buffer
// (300 KiB, 1 MiB, 5 MiB) between short ones: each comes whole, the line
// after it too, every position is the offset after its own line, and a
// resume at the position of a long line or of the line after it reads on
// from the next line. Before, the start of a long line was the reader's
// buffer, overwritten by the read of its rest: the row came out corrupted,
// with bytes of the following lines spliced in.
func TestLongLinesAreReadIntact(t *testing.T) {
	t.Parallel()
	content, lines, ends := longLinesFile()
	p := write(t, "long.jsonl", content)
	for _, batch := range []int{1, 1000} {
		src := open(t, map[string]string{"path": p}, "")
		var msgs []*stream.Message
		for {
			got, err := src.Read(context.Background(), batch)
			msgs = append(msgs, got...)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		checkLong(t, msgs, lines, ends, 0)
		for _, i := range []int{0, 1, 2, 4, 7} {
			checkLong(t, readAll(t, open(t, map[string]string{"path": p}, msgs[i].Position)), lines, ends, i+1)
		}
	}
}

// TestFollowedLongLinesAreReadIntact follows a file to which lines longer
// than the reader's buffer are appended in pieces, some ending mid-line:
// each is read whole once its newline is written.
func TestFollowedLongLinesAreReadIntact(t *testing.T) {
	t.Parallel()
	content, lines, ends := longLinesFile()
	p := write(t, "grow.jsonl", "")
	src := open(t, map[string]string{"path": p, "follow": "true", "poll": "2ms"}, "")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for rest := content; len(rest) > 0; {
			n := min(len(rest), 100<<10+7) // pieces that end mid-line
			appendFile(t, p, rest[:n])
			rest = rest[n:]
			time.Sleep(time.Millisecond)
		}
	}()
	var msgs []*stream.Message
	for len(msgs) < len(lines) {
		got, err := src.Read(ctx, 3)
		if err != nil {
			t.Fatalf("after %d messages: %v", len(msgs), err)
		}
		msgs = append(msgs, got...)
	}
	<-done
	checkLong(t, msgs, lines, ends, 0)
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	more, err := src.Read(short, 10)
	if len(more) > 0 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("after the last line: %d messages, %v", len(more), err)
	}
}

func appendFile(t *testing.T, p, data string) {
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Error(err)
		return
	}
	defer f.Close()
	if _, err := f.WriteString(data); err != nil {
		t.Error(err)
	}
}
