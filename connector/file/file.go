// Package file provides connectors that need no external service:
//
//   - type file: a source reading a JSON lines or CSV file (optionally gzip
//     compressed), bounded or following a growing file, whose position (the
//     byte offset, the file's identity and a fingerprint of the content
//     before the offset) the runtime checkpoints; a replaced, rotated,
//     truncated or rewritten file is read from its beginning; and a sink
//     appending JSON lines. The key of its position names the file's
//     folder and name (File.Identity), so it survives a move of the folder.
//   - type stdin: a source reading JSON lines or CSV from standard input.
//   - type stdout: a sink writing JSON lines to standard output.
//   - type discard: a sink that drops rows (benchmarks, dry runs).
//
// Their params are declared in FileSpec, StdinSpec, StdoutSpec and
// DiscardSpec (`kisflow list file`).
package file

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/internal/jsonl"
	"github.com/kisflow-go/kisflow/stream"
)

// Connector types this package registers.
const (
	TypeFile    = "file"
	TypeStdin   = "stdin"
	TypeStdout  = "stdout"
	TypeDiscard = "discard"
)

// Install registers the file, stdin, stdout and discard connector types.
func Install(reg driver.Registrar) error {
	for _, c := range []struct {
		spec *driver.Spec
		f    driver.Factory
	}{{FileSpec, NewFile}, {StdinSpec, NewStdin}, {StdoutSpec, NewStdout}, {DiscardSpec, NewDiscard}} {
		if err := reg.RegisterConnector(c.spec, c.f); err != nil {
			return err
		}
	}
	return nil
}

type fileParams struct {
	Path   string        `param:"path" doc:"the file (else the connector's key), relative to the YAML file's folder" example:"orders.jsonl"`
	Format string        `param:"format" enum:"jsonl|csv" doc:"jsonl or csv (a header line); default from the extension (.csv, .csv.gz: csv; else jsonl); .gz is read as gzip"`
	Follow bool          `param:"follow" default:"false" doc:"wait for more lines at the end of the file instead of ending the run"`
	Poll   time.Duration `param:"poll" default:"200ms" min:"1ms" doc:"how often a following source looks for more lines"`
	Sync   bool          `param:"sync" default:"true" doc:"fsync sink writes before a commit or an acknowledgement depends on them"`
}

type stdinParams struct {
	Format string `param:"format" default:"jsonl" enum:"jsonl|csv" doc:"jsonl or csv (a header line)"`
}

type noParams struct{}

// Specs of the connector types this package registers.
var (
	FileSpec    = withKey(driver.MustSpec[fileParams](TypeFile, "a JSON lines or CSV file (gzip too): a bounded or following source whose position is the byte offset and the file's identity, and a JSON lines sink; a line may be of any length (it is read whole into memory)"))
	StdinSpec   = unidentified(driver.MustSpec[stdinParams](TypeStdin, "a bounded source reading JSON lines or CSV from standard input; the lines at hand are processed while the writer keeps it open (after linger), not only at its end"))
	StdoutSpec  = driver.MustSpec[noParams](TypeStdout, "a sink writing JSON lines to standard output")
	DiscardSpec = driver.MustSpec[noParams](TypeDiscard, "a sink that drops rows (benchmarks, dry runs)")
)

// unidentified marks a spec whose source messages carry neither an ID nor
// a position (standard input cannot be read again).
func unidentified(s *driver.Spec) *driver.Spec {
	s.Unidentified = true
	return s
}

func withKey(s *driver.Spec) *driver.Spec {
	s.Key = "the file, when params.path is not given"
	return s
}

// File is the driver of type file: a source and a JSON lines sink.
type File struct {
	cfg    *config.Conn
	path   string
	format string
	follow bool
	poll   time.Duration
	sync   bool
	sink   atomic.Pointer[jsonl.Writer]
}

// NewFile builds a file driver from its config.
func NewFile(cfg *config.Conn) (driver.Driver, error) {
	var p fileParams
	if err := FileSpec.Decode(cfg, &p); err != nil {
		return nil, err
	}
	if p.Path == "" {
		p.Path = cfg.Key
	}
	if p.Path == "" {
		return nil, fmt.Errorf("file connector %q: params.path (or key) is required", cfg.CName)
	}
	f := &File{cfg: cfg, path: cfg.Path(p.Path), follow: p.Follow, sync: p.Sync, poll: p.Poll}
	var err error
	if f.format, err = formatOf(p.Format, p.Path); err != nil {
		return nil, fmt.Errorf("file connector %q: %w", cfg.CName, err)
	}
	return f, nil
}

func formatOf(format, path string) (string, error) {
	switch format {
	case "jsonl", "csv":
		return format, nil
	case "":
		p := strings.TrimSuffix(path, ".gz")
		if strings.HasSuffix(p, ".csv") {
			return "csv", nil
		}
		return "jsonl", nil
	}
	return "", fmt.Errorf("unknown format %q (want jsonl or csv)", format)
}

// Start checks nothing: the file may appear later (a sink creates it).
func (f *File) Start(context.Context) error { return nil }

// Close closes the sink file, if it was opened.
func (f *File) Close(context.Context) error {
	if w := f.sink.Load(); w != nil {
		return w.Close()
	}
	return nil
}

// Path is the resolved file path.
func (f *File) Path() string { return f.path }

// Write appends rows as JSON lines, synced to disk unless sync is "false".
func (f *File) Write(ctx context.Context, rows []any) error {
	w := f.sink.Load()
	if w == nil {
		nw, err := jsonl.Open(f.path, f.sync)
		if err != nil {
			return err
		}
		if !f.sink.CompareAndSwap(nil, nw) {
			nw.Close()
		}
		w = f.sink.Load()
	}
	return w.Write(ctx, rows)
}

// Identity names the file for the key of a flow's position (see
// driver.Identifier) as dir=DEV:INODE/NAME: its folder's device and inode
// and its name. Renaming or moving the folder within its filesystem (the
// configuration folder with its data and state) keeps it, and so does
// another file put at the path (the position tells the files apart); two
// files of the same name in different folders differ. "" when the folder
// does not exist (yet) or the system has no inode numbers: the key is then
// made from the path.
func (f *File) Identity() string {
	dir, err := os.Stat(filepath.Dir(f.path))
	if err != nil || !dir.IsDir() {
		return ""
	}
	id := identity(dir)
	if id == "" {
		return ""
	}
	return "dir=" + id + "/" + filepath.Base(f.path)
}

// Resumable reports that a file resumes from positions the runtime
// stores (byte offsets); standard input has none.
func (f *File) Resumable() bool { return true }

// OpenSource opens the file at the resume position: OFFSET@ID:FP, the
// byte offset of the uncompressed content after the last committed line,
// the identity (DEV:INODE, empty where the system has none) of the file
// it was committed for and the fingerprint of the content before the
// offset (its CRC-32C, eight hex digits); or OFFSET@ID, or a plain OFFSET,
// as earlier versions stored it. A file that is not the one the position
// names (replaced, rotated), is shorter than the offset (truncated), or
// whose content before the offset is not the one the position was
// committed after (truncated and written again, rewritten in place) is
// read from the beginning, with a warning.
func (f *File) OpenSource(ctx context.Context, opts stream.SourceOptions) (stream.Source, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	var s *lineSource
	if opts.Start.IsZero() {
		offset, want, fp, err := parsePosition(opts.Resume)
		if err != nil {
			return nil, fmt.Errorf("file source %s: %w", f.path, err)
		}
		if s, err = f.open(offset, want, fp, log); err != nil {
			return nil, err
		}
	} else {
		pos, err := f.seek(opts.Start)
		if err != nil {
			return nil, err
		}
		offset, want, fp, _ := parsePosition(pos)
		if s, err = f.open(offset, want, fp, log); err != nil {
			return nil, err
		}
		log.Info(fmt.Sprintf("file %s: starting at %s (stream.start %s), not at the committed position", f.path, pos, opts.Start))
	}
	s.follow, s.poll, s.log = f.follow, f.poll, log
	s.reopen = func() (*lineSource, error) { return f.open(0, "", "", log) }
	switch opts.Stop.Kind {
	case stream.Committed:
	case stream.AtStart:
		if strings.HasSuffix(f.path, ".gz") {
			s.follow = false // a compressed file's content is read to its end
		} else {
			s.stop = s.total.Load()
		}
	case stream.AtPosition:
		stop, _, _, err := parsePosition(opts.Stop.Position)
		if err != nil {
			s.Close(ctx)
			return nil, fmt.Errorf("file source %s: stream.stop: %w (want a byte offset)", f.path, err)
		}
		s.stop = stop
	default:
		s.Close(ctx)
		return nil, fmt.Errorf("file source %s: cannot stop at %s (it can do %s)", f.path, opts.Stop, f.Seeks().Describe())
	}
	return s, nil
}

// Seeks says that a file starts at earliest, latest or a byte offset, and
// stops at a byte offset or at its size when the run began.
func (f *File) Seeks() stream.SeekSupport {
	return stream.SeekSupport{
		Start: []stream.BoundKind{stream.Earliest, stream.Latest, stream.AtPosition},
		Stop:  []stream.BoundKind{stream.AtStart, stream.AtPosition},
		Form:  "a byte offset (the line that starts at or after it is the first read; a stop ends before the first line that ends after it)",
		Order: func(p string) ([]uint64, error) {
			offset, _, _, err := parsePosition(p)
			if err != nil || p == "" {
				return nil, errors.New("not a byte offset of 0 or more")
			}
			return []uint64{uint64(offset)}, nil
		},
	}
}

// seek returns the position the file starts at for to: OFFSET (or a
// whole OFFSET@ID:FP position, as `kisflow positions` shows it). A plain
// offset inside a line moves to the start of the next line.
func (f *File) seek(to stream.Bound) (string, error) {
	switch to.Kind {
	case stream.Earliest:
		return "0", nil
	case stream.Latest, stream.AtPosition:
	default:
		return "", fmt.Errorf("file source %s: cannot start at %s (it can do %s)", f.path, to, f.Seeks().Describe())
	}
	info, err := os.Stat(f.path)
	if err != nil {
		return "", fmt.Errorf("file source: %w", err)
	}
	gz := strings.HasSuffix(f.path, ".gz")
	if to.Kind == stream.Latest {
		if gz {
			return "", fmt.Errorf("file source %s: a compressed file cannot start at latest (its uncompressed size is not known without reading it)", f.path)
		}
		return strconv.FormatInt(lastLineEnd(f.path, info.Size()), 10), nil
	}
	offset, id, fp, err := parsePosition(to.Position)
	if err != nil {
		return "", fmt.Errorf("file source %s: start position: %w (want a byte offset)", f.path, err)
	}
	if id != "" || fp != "" {
		return to.Position, nil // a whole position, checked against the file when opened
	}
	if !gz && offset > info.Size() {
		return "", fmt.Errorf("file source %s: start position %d is past the end of the file (%d bytes)", f.path, offset, info.Size())
	}
	if !gz && offset > 0 {
		offset = nextLineStart(f.path, offset)
	}
	return strconv.FormatInt(offset, 10), nil
}

// nextLineStart is offset when a line starts there, else the offset
// where the next line starts (the end of the file if none does).
func nextLineStart(path string, offset int64) int64 {
	fh, err := os.Open(path)
	if err != nil {
		return offset
	}
	defer fh.Close()
	buf := make([]byte, 64<<10)
	at := offset - 1
	for {
		n, err := fh.ReadAt(buf, at)
		if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
			return at + int64(i) + 1
		}
		at += int64(n)
		if err != nil {
			return at
		}
	}
}

// lastLineEnd is the offset after the last newline of a file of size
// bytes (0 when it has none): latest skips every whole line, and a line
// still being written is read when it ends.
func lastLineEnd(path string, size int64) int64 {
	fh, err := os.Open(path)
	if err != nil {
		return size
	}
	defer fh.Close()
	buf := make([]byte, 64<<10)
	for end := size; end > 0; {
		from := max(end-int64(len(buf)), 0)
		n, _ := fh.ReadAt(buf[:end-from], from)
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			return from + int64(i) + 1
		}
		end = from
	}
	return 0
}

// Positions tells the file's head (its size, for a compressed file its
// uncompressed content's end is not known: "") and the lag in bytes
// behind the committed position the runtime keeps.
func (f *File) Positions(_ context.Context, _ stream.SourceOptions, committed string) (stream.Positions, error) {
	p := stream.Positions{Lag: -1, Unit: "bytes"}
	info, err := os.Stat(f.path)
	if err != nil {
		return p, fmt.Errorf("file source: %w", err)
	}
	if strings.HasSuffix(f.path, ".gz") {
		return p, nil
	}
	p.Head = strconv.FormatInt(info.Size(), 10)
	offset, id, _, err := parsePosition(committed)
	if err != nil {
		return p, nil
	}
	if id != "" && identity(info) != "" && id != identity(info) {
		offset = 0 // another file is at the path: it is read from its start
	}
	if offset <= info.Size() {
		p.Lag = info.Size() - offset
	} else {
		p.Lag = info.Size()
	}
	return p, nil
}

// SeekPosition returns the position for the runtime to store so that the
// next run starts at to.
func (f *File) SeekPosition(_ context.Context, _ stream.SourceOptions, to stream.Bound) (string, error) {
	return f.seek(to)
}

// parsePosition splits a position into its offset, file identity and
// fingerprint: OFFSET@ID:FP, where ID is DEV:INODE or empty; OFFSET@ID
// (ID DEV:INODE) and OFFSET as earlier versions wrote them.
func parsePosition(pos string) (offset int64, id, fp string, err error) {
	if pos == "" {
		return 0, "", "", nil
	}
	num, rest, _ := strings.Cut(pos, "@")
	if offset, err = strconv.ParseInt(num, 10, 64); err != nil || offset < 0 {
		return 0, "", "", fmt.Errorf("bad resume position %q", pos)
	}
	if strings.Count(rest, ":") == 1 && !strings.HasPrefix(rest, ":") {
		return offset, rest, "", nil // DEV:INODE, without a fingerprint
	}
	if i := strings.LastIndexByte(rest, ':'); i >= 0 {
		id, fp = rest[:i], rest[i+1:]
	}
	if fp == "" && rest != "" {
		return 0, "", "", fmt.Errorf("bad resume position %q", pos)
	}
	return offset, id, fp, nil
}

// open opens the file at offset, or at its start if it is not the file
// whose identity is want ("": not known), is shorter than offset, or its
// content before offset does not have the fingerprint fp ("": not known).
func (f *File) open(offset int64, want, fp string, log *slog.Logger) (*lineSource, error) {
	fh, err := os.Open(f.path)
	if err != nil {
		return nil, fmt.Errorf("file source: %w", err)
	}
	info, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("file source: %w", err)
	}
	id, gz := identity(info), strings.HasSuffix(f.path, ".gz")
	switch {
	case want != "" && id != "" && want != id:
		log.Warn(fmt.Sprintf("file %s is not the file the position was committed for (replaced or rotated): reading it from the beginning", f.path))
		offset, fp = 0, ""
	case !gz && offset > info.Size():
		warnShorter(log, f.path, offset)
		offset, fp = 0, ""
	}
	s, err := newLineSource(fh, f.path, gz, f.format, offset, fp, true)
	if err != nil {
		fh.Close()
		switch {
		case errors.Is(err, errPastEnd):
			// A compressed file's content is shorter than the offset.
			warnShorter(log, f.path, offset)
			return f.open(0, "", "", log)
		case errors.Is(err, errChanged):
			log.Warn(fmt.Sprintf("file %s changed before the committed position %d (truncated and written again, or rewritten in place): reading it from the beginning", f.path, offset))
			return f.open(0, "", "", log)
		}
		return nil, err
	}
	s.id, s.info = id, info
	s.total.Store(info.Size())
	return s, nil
}

func warnShorter(log *slog.Logger, path string, offset int64) {
	log.Warn(fmt.Sprintf("file %s is shorter than the committed position %d (truncated or replaced): reading it from the beginning", path, offset))
}

// Stdin is the driver of type stdin: a bounded source over standard input.
type Stdin struct {
	cfg    *config.Conn
	format string
	in     io.Reader
}

// NewStdin builds a stdin driver; params.format is jsonl (default) or csv.
func NewStdin(cfg *config.Conn) (driver.Driver, error) {
	var p stdinParams
	if err := StdinSpec.Decode(cfg, &p); err != nil {
		return nil, err
	}
	return &Stdin{cfg: cfg, format: p.Format, in: os.Stdin}, nil
}

// Start does nothing.
func (s *Stdin) Start(context.Context) error { return nil }

// Close does nothing; standard input stays open.
func (s *Stdin) Close(context.Context) error { return nil }

// OpenSource reads standard input from where it stands; stdin has no
// position to resume from.
func (s *Stdin) OpenSource(ctx context.Context, _ stream.SourceOptions) (stream.Source, error) {
	live := newLiveReader(s.in)
	src, err := newLineSource(live, "stdin", false, s.format, 0, "", false)
	if err != nil {
		live.Close()
		return nil, err
	}
	src.live = live
	return src, nil
}

// Stdout is the driver of type stdout: a sink writing JSON lines.
type Stdout struct {
	w *jsonl.Writer
}

// NewStdout builds a stdout driver.
func NewStdout(cfg *config.Conn) (driver.Driver, error) {
	if err := StdoutSpec.Decode(cfg, &noParams{}); err != nil {
		return nil, err
	}
	return &Stdout{}, nil
}

// Start prepares standard output for writing.
func (s *Stdout) Start(context.Context) error {
	s.w = jsonl.FromFile(os.Stdout)
	return nil
}

// Close flushes standard output.
func (s *Stdout) Close(context.Context) error { return s.w.Flush() }

// Write prints rows as JSON lines.
func (s *Stdout) Write(ctx context.Context, rows []any) error { return s.w.Write(ctx, rows) }

// Discard is the driver of type discard: a sink that counts and drops rows.
type Discard struct {
	n atomic.Int64
}

// NewDiscard builds a discard driver.
func NewDiscard(cfg *config.Conn) (driver.Driver, error) {
	if err := DiscardSpec.Decode(cfg, &noParams{}); err != nil {
		return nil, err
	}
	return &Discard{}, nil
}

// Start does nothing.
func (d *Discard) Start(context.Context) error { return nil }

// Close does nothing.
func (d *Discard) Close(context.Context) error { return nil }

// Write counts rows.
func (d *Discard) Write(_ context.Context, rows []any) error {
	d.n.Add(int64(len(rows)))
	return nil
}

// Rows is how many rows were written.
func (d *Discard) Rows() int64 { return d.n.Load() }

// Check verifies, for kisflow dry-run, that a source's file can be read
// (or, with follow, that its folder exists for it to appear in) and that
// a sink's file can be appended to, or created in its folder or the
// nearest existing one above it. It opens nothing for writing.
func (f *File) Check(_ context.Context, use config.ConnUse) error {
	info, err := os.Stat(f.path)
	exists := err == nil
	if err != nil && !missing(err) {
		return err
	}
	if exists && info.IsDir() {
		return stream.Fatal(fmt.Errorf("%s is a folder, not a file", f.path))
	}
	if use.Source {
		switch {
		case exists:
			r, err := os.Open(f.path)
			if err != nil {
				return stream.Fatal(err)
			}
			r.Close()
		case f.follow:
			if _, err := os.Stat(filepath.Dir(f.path)); err != nil {
				return stream.Fatal(fmt.Errorf("the folder of %s: %w", f.path, err))
			}
		default:
			return stream.Fatal(fmt.Errorf("file %s does not exist", f.path))
		}
	}
	if !use.Sink {
		return nil
	}
	if exists {
		w, err := os.OpenFile(f.path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return stream.Fatal(err)
		}
		return w.Close()
	}
	dir := filepath.Dir(f.path)
	for {
		info, err := os.Stat(dir)
		switch {
		case err == nil && !info.IsDir():
			return stream.Fatal(fmt.Errorf("cannot create %s: %s is not a folder", f.path, dir))
		case err == nil:
			if err := writable(dir); err != nil {
				return stream.Fatal(fmt.Errorf("cannot create %s: %w", f.path, err))
			}
			return nil
		case !missing(err):
			return err
		}
		up := filepath.Dir(dir)
		if up == dir {
			return nil
		}
		dir = up
	}
}

// missing reports whether err of os.Stat says there is nothing at the
// path: not there, or a file where the path needs a folder.
func missing(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}
