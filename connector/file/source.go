package file

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/kisflow-go/kisflow/stream"
)

// lineSource reads messages from a stream of lines (JSON lines) or CSV
// records. Positions are OFFSET@ID:FP: the byte offset in the uncompressed
// content after the message's line, the file's identity (DEV:INODE, empty
// when it has none) and the fingerprint of the content before the offset
// (see fingerprint). It is read by one goroutine; Progress may be called
// from others.
type lineSource struct {
	name      string
	raw       io.ReadCloser
	counted   atomic.Pointer[countingReader]
	r         *bufio.Reader
	id        string      // the file's identity ("" for stdin, or if unknown)
	info      os.FileInfo // the file being read, nil for stdin
	log       *slog.Logger
	reopen    func() (*lineSource, error) // opens the path anew, from its start
	moved     string                      // why the path no longer names the file being read, once seen
	header    []string
	format    string
	offset    int64  // uncompressed offset of the next line
	sum       uint32 // CRC-32C of the content before offset
	positions bool
	follow    bool
	stop      int64 // the offset a bounded read ends at (stream.stop); -1: none
	poll      time.Duration
	total     atomic.Int64
	partial   []byte      // a line without its newline, while following or live
	live      *liveReader // stdin: reads give up with the context
	eof       bool
	text      []byte // the JSON lines of the current Read
	spans     []span // where each message's line is in text
	ends      []end  // where each message of the current Read ends
	posText   []byte // the positions of the current Read's messages
}

// end is where a message's line ends, in which file, and the checksum of
// the content up to there.
type end struct {
	offset int64
	id     string
	sum    uint32
	cut    int // where its position ends in posText
}

// castagnoli is the CRC-32C table (hardware accelerated on amd64 and
// arm64).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// fingerprint appends the fingerprint of a content whose CRC-32C is sum:
// eight lower-case hex digits. It names the content before a position, so
// that a file truncated and written again, or rewritten in place, is not
// taken for the one the position was committed in.
func fingerprint(b []byte, sum uint32) []byte {
	const digits = "0123456789abcdef"
	for shift := 28; shift >= 0; shift -= 4 {
		b = append(b, digits[(sum>>shift)&0xf])
	}
	return b
}

// summer adds what is written to it to a CRC-32C.
type summer struct{ sum *uint32 }

func (w summer) Write(p []byte) (int, error) {
	*w.sum = crc32.Update(*w.sum, castagnoli, p)
	return len(p), nil
}

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// newLineSource reads raw from offset, an offset in its uncompressed
// content that ends a line (0: from the start). With a fingerprint fp the
// content before offset must have it, else the error is errChanged.
func newLineSource(raw io.ReadCloser, name string, gz bool, format string, offset int64, fp string, positions bool) (*lineSource, error) {
	s := &lineSource{name: name, raw: raw, format: format, positions: positions, stop: -1}
	counted := &countingReader{r: raw}
	s.counted.Store(counted)
	var in io.Reader = counted
	if gz {
		zr, err := gzip.NewReader(counted)
		if err != nil {
			return nil, fmt.Errorf("file source %s: %w", name, err)
		}
		in = zr
	}
	s.r = bufio.NewReaderSize(in, 256<<10)
	if format == "csv" {
		// The header is read first, whatever the resume position.
		line, err := s.r.ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("file source %s: %w", name, err)
		}
		// A UTF-8 byte order mark (an Excel export) is not part of the
		// first column's name.
		hr := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(line, utf8BOM)))
		if s.header, err = hr.Read(); err != nil {
			return nil, fmt.Errorf("file source %s: CSV header: %w", name, err)
		}
		s.offset = int64(len(line))
		s.sum = crc32.Update(0, castagnoli, line)
	}
	if offset > s.offset {
		if _, err := io.CopyN(summer{&s.sum}, s.r, offset-s.offset); err != nil {
			if errors.Is(err, io.EOF) {
				err = errPastEnd
			}
			return nil, fmt.Errorf("file source %s: seek to position %d: %w", name, offset, err)
		}
		s.offset = offset
	}
	if fp != "" && string(fingerprint(nil, s.sum)) != fp {
		return nil, fmt.Errorf("file source %s: position %d: %w", name, offset, errChanged)
	}
	return s, nil
}

// Errors of a resume position that does not hold for the file's content.
var (
	errPastEnd = errors.New("the content ends before it")
	errChanged = errors.New("the content before it changed")
)

// Read returns up to max messages. At the end of a bounded file it returns
// io.EOF; when following it waits for more lines, polling.
func (s *lineSource) Read(ctx context.Context, max int) (out []*stream.Message, err error) {
	defer func() { s.finish(out) }()
	if s.eof {
		return nil, io.EOF
	}
	slab := make([]stream.Message, 0, min(max, 1<<16))
	out = make([]*stream.Message, 0, min(max, 1<<16))
	if s.live != nil {
		s.live.ctx = ctx
		defer func() { s.live.ctx = nil }()
	}
	for len(out) < max {
		if s.live != nil && len(out) > 0 && !s.lineBuffered() {
			// No more whole line read yet from a stream that stays open:
			// the rows in hand go now rather than after the next write.
			return out, nil
		}
		if s.stop >= 0 && s.offset >= s.stop {
			s.eof = true // the stop position is reached (stream.stop)
			return out, io.EOF
		}
		line, err := s.r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer: gather it whole. The part
			// read so far is the reader's buffer, which the next read
			// overwrites: it is copied before reading on.
			long := append([]byte(nil), line...)
			rest, err2 := s.r.ReadBytes('\n')
			line = append(long, rest...)
			err = err2
		}
		if len(s.partial) > 0 {
			line = append(s.partial, line...)
			s.partial = nil
		}
		if err != nil {
			if s.live != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
				// The read gave up waiting: the start of a line read so
				// far waits for its end.
				s.partial = append([]byte(nil), line...)
				return out, ctx.Err()
			}
			if !errors.Is(err, io.EOF) {
				return out, fmt.Errorf("file source %s: %w", s.name, err)
			}
			if s.follow {
				s.partial = append([]byte(nil), line...)
				if len(out) > 0 {
					return out, nil
				}
				if s.moved != "" {
					// The old file is read to its end: a last line
					// without a newline ends there.
					if line := s.partial; len(bytes.TrimSpace(line)) > 0 {
						s.partial = nil
						if m := s.message(&slab, line); m != nil {
							return append(out, m), nil
						}
					}
					if err := s.switchFile(ctx); err != nil {
						return out, err
					}
					continue
				}
				if s.moved = s.check(); s.moved != "" {
					continue // read what was appended to the old file before it moved
				}
				if err := sleep(ctx, s.poll); err != nil {
					return out, err
				}
				continue
			}
			if len(bytes.TrimSpace(line)) > 0 {
				if s.positions && !s.parses(line) {
					// Most likely a line the writer has not finished: a
					// position past it would split the row in two.
					s.log.Warn(fmt.Sprintf("the last line of %s has no newline and does not parse: left for the next run", s.name))
				} else if s.stop >= 0 && s.offset+int64(len(line)) > s.stop {
					// past the stop position: not read
				} else if m := s.message(&slab, line); m != nil {
					out = append(out, m)
				}
			}
			s.eof = true
			return out, io.EOF
		}
		if s.stop >= 0 && s.offset+int64(len(line)) > s.stop {
			s.eof = true // the line ends past the stop position
			return out, io.EOF
		}
		if m := s.message(&slab, line); m != nil {
			out = append(out, m)
		}
		if len(out) > 0 && s.r.Buffered() == 0 && ctx.Err() != nil {
			return out, ctx.Err()
		}
	}
	return out, nil
}

// lineBuffered reports whether the buffer holds the end of a line.
func (s *lineSource) lineBuffered() bool {
	b, _ := s.r.Peek(s.r.Buffered()) // what is buffered: no read
	return bytes.IndexByte(b, '\n') >= 0
}

// message turns one line into a message, or nil for a blank line (whose
// bytes still advance the position). A JSON line's text is gathered in
// s.text and becomes its payload in finish.
func (s *lineSource) message(slab *[]stream.Message, line []byte) *stream.Message {
	s.offset += int64(len(line))
	s.sum = crc32.Update(s.sum, castagnoli, line)
	text := bytes.TrimRight(line, "\r\n")
	if len(bytes.TrimSpace(text)) == 0 {
		return nil
	}
	if s.positions {
		s.ends = append(s.ends, end{offset: s.offset, id: s.id, sum: s.sum})
	}
	if s.format == "csv" {
		*slab = append(*slab, stream.Message{Payload: s.record(text)})
	} else {
		*slab = append(*slab, stream.Message{})
		s.spans = append(s.spans, span{len(s.text), len(s.text) + len(text)})
		s.text = append(s.text, text...)
	}
	return &(*slab)[len(*slab)-1]
}

type span struct{ from, to int }

// finish makes the payloads of a Read's JSON lines substrings of one string
// and sets every message's position, the offset after its own line, as
// substrings of another (two allocations per Read, not per line). A
// message's position identifies it: see stream.MessagePositions.
func (s *lineSource) finish(out []*stream.Message) {
	if len(s.spans) > 0 {
		all := string(s.text)
		for i, m := range out {
			m.Payload = all[s.spans[i].from:s.spans[i].to]
		}
		s.text, s.spans = s.text[:0], s.spans[:0]
	}
	if s.positions && len(out) > 0 {
		b := s.posText[:0]
		for i := range s.ends {
			e := &s.ends[i]
			b = strconv.AppendInt(b, e.offset, 10)
			b = append(b, '@')
			b = append(b, e.id...)
			b = append(b, ':')
			b = fingerprint(b, e.sum)
			e.cut = len(b)
		}
		all := string(b)
		from := 0
		for i, m := range out[:min(len(out), len(s.ends))] {
			m.Position = all[from:s.ends[i].cut]
			from = s.ends[i].cut
		}
		s.posText = b[:0]
	}
	s.ends = s.ends[:0]
}

// PositionsPerMessage reports that every message carries its own position
// (not for standard input, which has none).
func (s *lineSource) PositionsPerMessage() bool { return s.positions }

// check reports why the path no longer names the file being read, when a
// followed file was rotated (another file is at the path) or truncated
// (it is shorter than what was read); "" while neither. A CSV or gzip
// file counts only once it has content: its header comes first.
func (s *lineSource) check() string {
	if s.info == nil {
		return ""
	}
	info, err := os.Stat(s.name)
	if err != nil {
		return "" // renamed, not yet recreated: keep reading the old file
	}
	if (s.format == "csv" || strings.HasSuffix(s.name, ".gz")) && info.Size() == 0 {
		return ""
	}
	if !os.SameFile(s.info, info) {
		return "rotated"
	}
	if info.Size() < s.counted.Load().n.Load() {
		return "truncated"
	}
	return ""
}

// switchFile closes the file whose end was reached after it moved and
// reads the file now at the path from its start.
func (s *lineSource) switchFile(ctx context.Context) error {
	next, err := s.reopen()
	if errors.Is(err, fs.ErrNotExist) {
		return sleep(ctx, s.poll) // gone again: look once more later
	}
	if err != nil {
		return err
	}
	_ = s.raw.Close()
	s.log.Warn(fmt.Sprintf("file %s was %s: read the old file to its end, reading the file now at the path from the beginning", s.name, s.moved))
	s.raw, s.r, s.header, s.offset, s.sum, s.id, s.info = next.raw, next.r, next.header, next.offset, next.sum, next.id, next.info
	s.counted.Store(next.counted.Load())
	s.total.Store(next.total.Load())
	s.partial, s.moved = nil, ""
	return nil
}

// parses reports whether a line is a whole record: a JSON value, or a CSV
// record with as many fields as the header.
func (s *lineSource) parses(line []byte) bool {
	text := bytes.TrimRight(line, "\r\n")
	if s.format != "csv" {
		return json.Valid(text)
	}
	rec, err := csv.NewReader(bytes.NewReader(text)).Read()
	return err == nil && len(rec) == len(s.header)
}

// record parses one CSV line into a map of header to value; numbers become
// int64 or float64 so that expressions and typed functions read them as
// numbers. A
// line that does not parse is passed on as text, to be rejected downstream
// with its reason.
func (s *lineSource) record(line []byte) any {
	rec, err := csv.NewReader(bytes.NewReader(line)).Read()
	if err != nil {
		return string(line)
	}
	m := make(map[string]any, len(s.header))
	for i, h := range s.header {
		if i >= len(rec) {
			break
		}
		v := rec[i]
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			m[h] = n
		} else if f, err := strconv.ParseFloat(v, 64); err == nil {
			m[h] = f
		} else {
			m[h] = v
		}
	}
	return m
}

// Ack does nothing: the runtime stores the file's position.
func (s *lineSource) Ack(context.Context, []*stream.Message) error { return nil }

// Close closes the file.
func (s *lineSource) Close(context.Context) error { return s.raw.Close() }

// Progress reports the bytes read from the file (compressed, for .gz) and
// its size when opened.
func (s *lineSource) Progress() (done, total int64) {
	return s.counted.Load().n.Load(), s.total.Load()
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// utf8BOM starts the CSV files some tools (Excel) write.
var utf8BOM = []byte("\ufeff")
