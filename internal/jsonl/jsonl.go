// Package jsonl appends rows to a file as JSON lines, syncing each write so
// that what Write returned nil for survives a crash.
package jsonl

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/kisflow-go/kisflow/stream"
)

// Writer appends rows to a JSON lines file. It is safe for concurrent use.
type Writer struct {
	mu   sync.Mutex
	path string
	f    *os.File
	w    *bufio.Writer
	sync bool
	// borrowed files (FromFile) are not closed by Close.
	borrowed bool
	buf      []byte   // a line being encoded
	keys     []string // a flat row's keys, being sorted
}

// Open opens path for appending, creating it and its folder. With sync,
// every Write is flushed to disk before it returns. A path that cannot be
// made for good is a stream.Fatal error (see stream.FatalPath).
func Open(path string, sync bool) (*Writer, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, stream.FatalPath(fmt.Errorf("open %s: %w", path, err))
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, stream.FatalPath(fmt.Errorf("open %s: %w", path, err))
	}
	return &Writer{path: path, f: f, w: bufio.NewWriterSize(f, 64<<10), sync: sync}, nil
}

// FromFile writes to an open file, such as os.Stdout, without syncing;
// Close flushes but leaves the file open.
func FromFile(f *os.File) *Writer {
	return &Writer{path: f.Name(), f: f, w: bufio.NewWriterSize(f, 64<<10), borrowed: true}
}

// Flush writes buffered lines out.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	return w.w.Flush()
}

// Path is the file's path.
func (w *Writer) Path() string { return w.path }

// Write appends each row as one line: JSON text rows ([]byte, string or
// json.RawMessage holding valid JSON) as they are, other rows encoded.
//
// A batch is written whole or not at all: when a row cannot be encoded or
// the file cannot take the lines (a full disk), the file is cut back to
// where it ended before the batch, so that no partial batch or torn line
// stays behind and a retry of the same rows writes them cleanly. A full
// disk is reported as such, naming the file; the error is not marked
// permanent, as more room lets the retry succeed. A row JSON cannot encode
// (a float ±Inf or NaN) is marked stream.Permanent: the runtime splits the
// batch down to it and dead-letters it.
func (w *Writer) Write(_ context.Context, rows []any) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return fmt.Errorf("write %s: closed", w.path)
	}
	start, err := w.end()
	if err != nil {
		return fmt.Errorf("write %s: %w", w.path, err)
	}
	for _, r := range rows {
		if err := w.line(r); err != nil {
			return w.rollback(start, "write", err)
		}
	}
	if err := w.w.Flush(); err != nil {
		return w.rollback(start, "write", err)
	}
	if w.sync {
		if err := w.f.Sync(); err != nil {
			return w.rollback(start, "sync", err)
		}
	}
	return nil
}

// end is the file's size before a batch, where a failed batch is cut back
// to; -1 for a borrowed file (standard output), which is not cut.
func (w *Writer) end() (int64, error) {
	if w.borrowed {
		return -1, nil
	}
	fi, err := w.f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// rollback drops what the failed batch left in the buffer, whose error
// would otherwise stick to every later write, and cuts the file back to
// start; it returns the batch's error (op is the step that failed).
func (w *Writer) rollback(start int64, op string, err error) error {
	w.w.Reset(w.f)
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
		err = pe.Err // the path is named once, below
	}
	if errors.Is(err, syscall.ENOSPC) {
		err = fmt.Errorf("the disk is full: %w", err)
	}
	err = fmt.Errorf("%s %s: %w", op, w.path, err)
	if start < 0 {
		return err
	}
	if terr := w.f.Truncate(start); terr != nil {
		return fmt.Errorf("%w (and cutting off the partial batch failed: %v)", err, terr)
	}
	return err
}

func (w *Writer) line(r any) error {
	if m, ok := r.(map[string]any); ok {
		// A flat row (what YAML functions and windows emit) is encoded
		// by hand, 4-5x faster than by reflection; anything the fast path
		// does not take is left to encoding/json.
		if b, ok := AppendFlat(w.buf[:0], m, &w.keys); ok {
			w.buf = append(b, '\n')
			_, err := w.w.Write(w.buf)
			return err
		}
	}
	data, err := marshal(r)
	if err != nil {
		// A value JSON has no text for (±Inf, NaN, a channel) is this
		// row's fault: no retry mends it, and the runtime dead-letters
		// the row instead of stalling the flow on it.
		return stream.Permanent(err)
	}
	if _, err := w.w.Write(data); err != nil {
		return err
	}
	return w.w.WriteByte('\n')
}

// marshal is a row's line, without the newline.
func marshal(r any) ([]byte, error) {
	switch v := r.(type) {
	case string:
		if json.Valid([]byte(v)) {
			return []byte(v), nil
		}
	case []byte:
		if json.Valid(v) {
			return v, nil
		}
	case json.RawMessage:
		return v, nil
	}
	return json.Marshal(r)
}

// Close flushes and closes the file.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	err := w.w.Flush()
	if !w.borrowed {
		if cerr := w.f.Close(); err == nil {
			err = cerr
		}
	}
	w.f = nil
	return err
}

// Size flushes buffered lines and returns the file's size: where the next
// line starts.
func (w *Writer) Size() (int64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return 0, fmt.Errorf("size of %s: closed", w.path)
	}
	if err := w.w.Flush(); err != nil {
		return 0, fmt.Errorf("size of %s: %w", w.path, err)
	}
	info, err := w.f.Stat()
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", w.path, err)
	}
	return info.Size(), nil
}

// LineEnds returns 0 and the offsets at which the file's lines end, the
// last n of them at most, in order.
func (w *Writer) LineEnds(n int) ([]int64, error) {
	if err := w.Flush(); err != nil {
		return nil, err
	}
	f, err := os.Open(w.path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", w.path, err)
	}
	defer f.Close()
	ends := []int64{0}
	var off int64
	r := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := r.ReadSlice('\n')
		off += int64(len(line))
		if err == bufio.ErrBufferFull {
			continue // a line longer than the buffer: read on
		}
		if err != nil {
			break // io.EOF, after an unterminated last line
		}
		ends = append(ends, off)
		if len(ends) > 2*n+1 {
			ends = append(ends[:1], ends[len(ends)-n:]...)
		}
	}
	if len(ends) > n+1 {
		ends = append(ends[:1], ends[len(ends)-n:]...)
	}
	return ends, nil
}

// Tail calls fn with each of the file's last n lines, oldest first,
// without its newline (an unterminated last line, a write torn by a crash,
// is left out). fn must not keep the line.
func (w *Writer) Tail(n int, fn func(line []byte)) error {
	if w.borrowed {
		return nil // standard output: nothing to read back
	}
	ends, err := w.LineEnds(n + 1)
	if err != nil {
		return err
	}
	if len(ends) < 2 {
		return nil // no complete line
	}
	// ends holds 0, then where the last lines end: the first of the last
	// n starts where the one before it ends, or at 0.
	from, last := ends[0], ends[len(ends)-1]
	if len(ends) > n+1 {
		from = ends[1]
	}
	f, err := os.Open(w.path)
	if err != nil {
		return fmt.Errorf("read %s: %w", w.path, err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(io.NewSectionReader(f, from, last-from), 64<<10)
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			fn(line[:len(line)-1])
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", w.path, err)
		}
	}
}

// Truncate cuts the file back to size bytes and syncs it; later lines
// are appended after them.
func (w *Writer) Truncate(size int64) error {
	return w.flushed("truncate", func() error {
		if err := w.f.Truncate(size); err != nil {
			return err
		}
		return w.f.Sync()
	})
}

// Sync writes buffered lines out and flushes the file to disk.
func (w *Writer) Sync() error { return w.flushed("sync", func() error { return w.f.Sync() }) }

// flushed writes buffered lines out, then runs fn, under the lock.
func (w *Writer) flushed(op string, fn func() error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return fmt.Errorf("%s %s: closed", op, w.path)
	}
	if err := w.w.Flush(); err != nil {
		return fmt.Errorf("%s %s: %w", op, w.path, err)
	}
	if err := fn(); err != nil {
		return fmt.Errorf("%s %s: %w", op, w.path, err)
	}
	return nil
}

// ID returns the file's identity: a random token kept beside it in
// PATH.id, made on first use. Two files never share one, even at the same
// path on two machines.
func (w *Writer) ID() (string, error) {
	idPath := w.path + ".id"
	if b, err := os.ReadFile(idPath); err == nil && len(b) > 0 {
		return string(b), nil
	}
	var buf [12]byte
	if _, err := rand.Read(buf[:]); err != nil {
		return "", fmt.Errorf("identity of %s: %w", w.path, err)
	}
	id := hex.EncodeToString(buf[:])
	if err := os.WriteFile(idPath, []byte(id), 0o644); err != nil {
		return "", fmt.Errorf("identity of %s: %w", w.path, err)
	}
	return id, nil
}
