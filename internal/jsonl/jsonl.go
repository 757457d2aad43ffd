// Package jsonl appends rows to a file as JSON lines, syncing each write so
// that what Write returned nil for survives a crash.
package jsonl

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
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
}

// Open opens path for appending, creating it and its folder. With sync,
// every Write is flushed to disk before it returns.
func Open(path string, sync bool) (*Writer, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
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
// permanent, as more room lets the retry succeed.
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
	data, err := marshal(r)
	if err != nil {
		return err
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
