package http

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"
)

// format is how a request body is split into rows.
type format int

const (
	formatJSON  format = iota // JSON values; a top-level array's elements are rows
	formatLines               // one JSON value per line
	formatCSV                 // a header line, then one row per record
)

// errUnsupportedType is returned by formatOf for a Content-Type it cannot
// read.
var errUnsupportedType = errors.New("unsupported Content-Type")

// formatOf maps a Content-Type header to a format. A missing header reads
// the body as JSON (which accepts JSON lines too).
func formatOf(contentType string) (format, error) {
	if contentType == "" {
		return formatJSON, nil
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return 0, fmt.Errorf("%w %q: %v", errUnsupportedType, contentType, err)
	}
	switch {
	case mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"):
		return formatJSON, nil
	case mt == "application/x-ndjson" || mt == "application/ndjson" || mt == "application/jsonl" ||
		mt == "application/x-jsonl" || mt == "application/jsonlines" || mt == "application/x-jsonlines":
		return formatLines, nil
	case mt == "text/csv":
		return formatCSV, nil
	}
	return 0, fmt.Errorf("%w %q", errUnsupportedType, mt)
}

// supportedTypes is what a 415 answer lists.
const supportedTypes = "application/json, application/x-ndjson (or application/jsonl), text/csv"

// syntaxError is a body that does not parse: its line (JSON lines, CSV) or
// byte offset (JSON), whichever is known.
type syntaxError struct {
	msg    string
	line   int   // 1-based, 0 if unknown
	offset int64 // bytes from the start of the body, -1 if unknown
}

func (e *syntaxError) Error() string { return e.msg }

// arena hands out copies of rows carved from shared chunks, so that a body
// costs about its own size in memory and a few allocations.
type arena struct {
	buf  []byte
	next int // size of the next chunk
}

func (a *arena) copy(b []byte) []byte {
	if cap(a.buf)-len(a.buf) < len(b) {
		n := max(a.next, len(b), 4<<10)
		a.buf = make([]byte, 0, n)
		a.next = min(2*n, 1<<20)
	}
	start := len(a.buf)
	a.buf = append(a.buf, b...)
	return a.buf[start:len(a.buf):len(a.buf)]
}

// parse reads body as f and calls emit with each row (JSON text, owned by
// the caller); an error from emit ends it. sizeHint, when known, is the
// body's length. Errors are *syntaxError for a malformed body, emit's, or
// the reader's wrapped.
func parse(body io.Reader, f format, sizeHint int64, emit func([]byte) error) error {
	a := &arena{next: 64 << 10}
	if sizeHint > 0 {
		a.next = int(sizeHint)
	}
	switch f {
	case formatLines:
		return parseLines(body, a, emit)
	case formatCSV:
		return parseCSV(body, a, emit)
	default:
		return parseJSON(body, a, emit)
	}
}

// parseJSON reads whitespace-separated JSON values with a streaming
// decoder: a top-level array stands for its elements, any other value is
// one row. JSON lines are therefore JSON too.
func parseJSON(body io.Reader, a *arena, emit func([]byte) error) error {
	br := bufio.NewReaderSize(body, 32<<10)
	dec := json.NewDecoder(br)
	var raw json.RawMessage
	decode := func() error {
		raw = raw[:0]
		if err := dec.Decode(&raw); err != nil {
			return jsonError(dec, err)
		}
		return emit(a.copy(raw))
	}
	for {
		c, err := peekValue(dec, br)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read body: %w", err)
		}
		if c != '[' {
			if err := decode(); err != nil {
				return err
			}
			continue
		}
		if _, err := dec.Token(); err != nil {
			return jsonError(dec, err)
		}
		for dec.More() {
			if err := decode(); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil { // the closing bracket
			return jsonError(dec, err)
		}
	}
}

// peekValue returns the first byte of the next top-level value without
// consuming it: from the decoder's buffer, else from the reader under it.
func peekValue(dec *json.Decoder, br *bufio.Reader) (byte, error) {
	buffered := dec.Buffered().(io.ByteReader)
	for {
		c, err := buffered.ReadByte()
		if err != nil {
			break
		}
		if !isSpace(c) {
			return c, nil
		}
	}
	for {
		b, err := br.Peek(1)
		if err != nil {
			return 0, err
		}
		if !isSpace(b[0]) {
			return b[0], nil
		}
		_, _ = br.ReadByte() // whitespace between values: nothing lost
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// jsonError turns a decoder error into a *syntaxError with the offset, or
// passes a read error on.
func jsonError(dec *json.Decoder, err error) error {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return &syntaxError{msg: fmt.Sprintf("malformed JSON near byte %d: %v", se.Offset, se), offset: se.Offset}
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		off := dec.InputOffset()
		return &syntaxError{msg: fmt.Sprintf("malformed JSON near byte %d: unexpected end of body", off), offset: off}
	}
	return fmt.Errorf("read body: %w", err)
}

// parseLines reads one JSON value per line; blank lines are skipped.
func parseLines(body io.Reader, a *arena, emit func([]byte) error) error {
	br := bufio.NewReaderSize(body, 64<<10)
	var long []byte // a line longer than the reader's buffer
	for n := 1; ; n++ {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long[:0], line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = br.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read body: %w", err)
		}
		if t := bytes.TrimSpace(line); len(t) > 0 {
			if !json.Valid(t) {
				var v json.RawMessage
				why := json.Unmarshal(t, &v)
				return &syntaxError{msg: fmt.Sprintf("malformed JSON on line %d: %v", n, why), line: n, offset: -1}
			}
			if err := emit(a.copy(t)); err != nil {
				return err
			}
		}
		if err != nil { // io.EOF
			return nil
		}
	}
}

// parseCSV reads a header line, then one row per record: a JSON object of
// header to value, numbers as JSON numbers and the rest as strings (as the
// file source reads CSV).
func parseCSV(body io.Reader, a *arena, emit func([]byte) error) error {
	r := csv.NewReader(bufio.NewReaderSize(body, 64<<10))
	r.ReuseRecord = true
	csvErr := func(err error) error {
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			return &syntaxError{msg: fmt.Sprintf("malformed CSV on line %d: %v", pe.Line, pe.Err), line: pe.Line, offset: -1}
		}
		return fmt.Errorf("read body: %w", err)
	}
	head, err := r.Read()
	if errors.Is(err, io.EOF) {
		return nil
	}
	if err != nil {
		return csvErr(err)
	}
	if len(head) > 0 {
		// A UTF-8 byte order mark (an Excel export) is not part of the
		// first column's name.
		head[0] = strings.TrimPrefix(head[0], "\ufeff")
	}
	keys := make([][]byte, len(head))
	for i, h := range head {
		k, _ := json.Marshal(h) // a string always marshals
		keys[i] = append(k, ':')
	}
	var row []byte
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return csvErr(err)
		}
		row = append(row[:0], '{')
		for i, v := range rec {
			if i > 0 {
				row = append(row, ',')
			}
			row = append(row, keys[i]...)
			if isNumber(v) {
				row = append(row, v...)
			} else {
				s, _ := json.Marshal(v)
				row = append(row, s...)
			}
		}
		if err := emit(a.copy(append(row, '}'))); err != nil {
			return err
		}
	}
}

// isNumber reports whether v is a JSON number as it stands.
func isNumber(v string) bool {
	return v != "" && (v[0] == '-' || v[0] >= '0' && v[0] <= '9') && json.Valid([]byte(v))
}
