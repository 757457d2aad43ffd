package jsonl_test

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kisflow-go/kisflow/internal/jsonl"
	"github.com/kisflow-go/kisflow/internal/testenv"
	"github.com/kisflow-go/kisflow/stream"
)

// rows are rows with ids from..to, each padded with pad.
func rows(from, to int, pad string) []any {
	var out []any
	for i := from; i <= to; i++ {
		out = append(out, map[string]any{"id": i, "pad": pad})
	}
	return out
}

// lines is the file text of rows.
func lines(rows []any) string {
	var b bytes.Buffer
	for _, r := range rows {
		data, err := jsonl.Marshal(r)
		if err != nil {
			panic(err)
		}
		b.Write(data)
		b.WriteByte('\n')
	}
	return b.String()
}

// A batch that does not fit on the disk fails with an error that names the
// file and says the disk is full, leaves the file as it was before the
// batch, and the same batch succeeds once there is room.
func TestFullDiskLeavesNoPartialBatchAndRetrySucceeds(t *testing.T) {
	disk := testenv.SmallDisk(t, "256k")
	path := filepath.Join(disk, "out.jsonl")
	w, err := jsonl.Open(path, true)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx := context.Background()
	pad := strings.Repeat("x", 100)
	first := rows(1, 10, pad)
	if err := w.Write(ctx, first); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(disk, "filler")
	// Fill the rest of the disk; the write stops with ENOSPC.
	_ = os.WriteFile(filler, make([]byte, 1<<20), 0o644)

	batch := rows(11, 2000, pad) // about 240 KB: more than the disk holds
	err = w.Write(ctx, batch)
	if err == nil {
		t.Fatal("a batch larger than the free space was written")
	}
	if msg := err.Error(); !strings.Contains(msg, "disk is full") || !strings.Contains(msg, path) {
		t.Errorf("error %q does not say the disk is full and name %s", msg, path)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := lines(first); string(got) != want {
		t.Fatalf("after the failed batch the file holds %d bytes, want the %d of the batch before it", len(got), len(want))
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(ctx, batch); err != nil {
		t.Fatalf("retry with room on the disk: %v", err)
	}
	got, err = os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := lines(append(first, batch...)); string(got) != want {
		t.Fatalf("after the retry the file holds %d bytes, want %d (every row once)", len(got), len(want))
	}
}

// A row that cannot be encoded fails its batch after earlier rows of it
// were flushed (the batch is larger than the buffer): none of the batch
// stays in the file, and the writer goes on writing.
func TestBadRowLeavesNoPartialBatch(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "out.jsonl")
	w, err := jsonl.Open(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx := context.Background()
	pad := strings.Repeat("x", 100)
	first := rows(1, 3, pad)
	if err := w.Write(ctx, first); err != nil {
		t.Fatal(err)
	}
	bad := append(rows(4, 1000, pad), map[string]any{"id": 1001, "ch": make(chan int)}) // about 110 KB before the bad row
	if err := w.Write(ctx, bad); err == nil || !strings.Contains(err.Error(), path) || !stream.IsPermanent(err) {
		t.Fatalf("a row with a channel: error %v, want a permanent one naming %s", err, path)
	}
	// A float JSON has no text for is a bad row too, which no retry mends.
	if err := w.Write(ctx, []any{map[string]any{"id": 1002, "y": math.Inf(1)}}); err == nil || !stream.IsPermanent(err) {
		t.Fatalf("a row holding +Inf: error %v, want a permanent one", err)
	}
	next := rows(4, 5, pad)
	if err := w.Write(ctx, next); err != nil {
		t.Fatalf("the batch after a failed one: %v", err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := lines(append(first, next...)); string(got) != want {
		t.Fatalf("the file holds %d bytes, want %d: the failed batch left lines behind", len(got), len(want))
	}
}

// Tail hands over the last n complete lines, oldest first, and leaves out
// a last line torn by a crash.
func TestTailReadsTheLastCompleteLines(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "dead.jsonl")
	w, err := jsonl.Open(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Write(context.Background(), rows(1, 5, "x")); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"id":6,"pa`); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for _, tc := range []struct {
		n    int
		want string
	}{{3, lines(rows(3, 5, "x"))}, {5, lines(rows(1, 5, "x"))}, {10, lines(rows(1, 5, "x"))}, {0, ""}} {
		var got strings.Builder
		if err := w.Tail(tc.n, func(line []byte) { got.Write(line); got.WriteByte('\n') }); err != nil {
			t.Fatal(err)
		}
		if got.String() != tc.want {
			t.Errorf("Tail(%d) = %q, want %q", tc.n, got.String(), tc.want)
		}
	}
}
