// Package generator provides the connector type generator: a source of
// synthetic rows for demos, tests and benchmarks. Row i (from 1) has an id i
// and a key i % keys. Its position is the last id, so a restarted job goes
// on after the last committed row.
//
// Its params are declared in Spec (`kisflow list generator`).
package generator

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/stream"
)

// Type is the connector type this package registers.
const Type = "generator"

// Install registers the generator connector type.
func Install(reg driver.Registrar) error { return reg.RegisterConnector(Spec, New) }

type params struct {
	Count  int     `param:"count" default:"0" min:"0" doc:"rows in all; 0: unbounded"`
	Keys   int     `param:"keys" default:"16" min:"1" doc:"distinct keys: row i has the key i % keys"`
	Format string  `param:"format" default:"json" enum:"json|map|struct" doc:"the rows' form: JSON text, map[string]any, or *generator.Row"`
	Rate   float64 `param:"rate" default:"0" min:"0" doc:"rows per second; 0: as fast as they are read"`
}

// Spec declares the generator's params.
var Spec = driver.MustSpec[params](Type, "synthetic rows for demos, tests and benchmarks: row i has id i and key i % keys")

// Row is a generated row in the struct format.
type Row struct {
	ID  int64 `json:"id"`
	Key int64 `json:"key"`
}

// Generator is the driver.
type Generator struct {
	count  int64
	keys   int64
	format string
	rate   float64
}

// New builds a generator from its config.
func New(cfg *config.Conn) (driver.Driver, error) {
	var p params
	if err := Spec.Decode(cfg, &p); err != nil {
		return nil, err
	}
	return &Generator{count: int64(p.Count), keys: int64(p.Keys), format: p.Format, rate: p.Rate}, nil
}

// Start does nothing.
func (g *Generator) Start(context.Context) error { return nil }

// Close does nothing.
func (g *Generator) Close(context.Context) error { return nil }

// Resumable reports that the generator resumes from positions the runtime
// stores (the last committed id).
func (g *Generator) Resumable() bool { return true }

// OpenSource starts after the resume position (the last committed id).
func (g *Generator) OpenSource(_ context.Context, opts stream.SourceOptions) (stream.Source, error) {
	var next int64 = 1
	if opts.Resume != "" {
		last, err := strconv.ParseInt(opts.Resume, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("generator: bad resume position %q", opts.Resume)
		}
		next = last + 1
	}
	return &source{g: g, next: next, start: time.Now(), first: next}, nil
}

type source struct {
	g     *Generator
	next  int64
	first int64
	start time.Time
}

func (s *source) Read(ctx context.Context, max int) ([]*stream.Message, error) {
	g := s.g
	n := int64(max)
	if g.count > 0 {
		n = min(n, g.count-s.next+1)
		if n <= 0 {
			return nil, io.EOF
		}
	}
	if g.rate > 0 {
		// Wait until the rate allows at least one row, then take what it allows.
		for {
			allowed := int64(time.Since(s.start).Seconds()*g.rate) - (s.next - s.first)
			if allowed > 0 {
				n = min(n, allowed)
				break
			}
			t := time.NewTimer(time.Duration(float64(time.Second) / g.rate))
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
		}
	}
	msgs := make([]stream.Message, n)
	out := make([]*stream.Message, n)
	var rows []Row
	if g.format == "struct" {
		rows = make([]Row, n)
	}
	for i := range msgs {
		id := s.next + int64(i)
		key := id % g.keys
		m := &msgs[i]
		switch g.format {
		case "struct":
			rows[i] = Row{ID: id, Key: key}
			m.Payload = &rows[i]
		case "map":
			m.Payload = map[string]any{"id": id, "key": key}
		default:
			m.Payload = `{"id":` + strconv.FormatInt(id, 10) + `,"key":` + strconv.FormatInt(key, 10) + `}`
		}
		m.Key = strconv.FormatInt(key, 10)
		out[i] = m
	}
	// The runtime commits the position of an epoch's last message.
	out[n-1].Position = strconv.FormatInt(s.next+n-1, 10)
	s.next += n
	return out, nil
}

func (s *source) Ack(context.Context, []*stream.Message) error { return nil }
func (s *source) Close(context.Context) error                  { return nil }

// Progress reports rows generated against count (0 when unbounded).
func (s *source) Progress() (done, total int64) { return s.next - 1, s.g.count }
