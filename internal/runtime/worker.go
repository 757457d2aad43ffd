package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/kisflow-go/kisflow/filter"
	"github.com/kisflow-go/kisflow/stream"
)

// worker runs parts of epochs on its own flow instance.
type worker struct {
	r    *Runner
	flow Flow
	rows []any
}

// process runs a part, retrying and isolating failures, then writes its
// output (at-least-once) or keeps it for the commit (exactly-once). A part
// that cannot finish because the work context ended marks its epoch failed.
func (w *worker) process(ctx context.Context, p *part) {
	r := w.r
	top := r.cfg.PolicyFor("").Retries
	if r.cfg.RunContext != nil {
		ctx = r.cfg.RunContext(ctx, p.msgs)
	}
	out, ok := w.group(ctx, p, p.msgs, top)
	if !ok {
		p.ep.failed.Store(true)
		return
	}
	if len(out) == 0 {
		return
	}
	if r.cfg.Delivery == ExactlyOnce {
		// Kept until the commit: copy it out of the flow's buffers.
		p.out = append([]any(nil), out...)
		return
	}
	if r.parts.Sink == nil {
		return
	}
	if err := r.retryForever(ctx, "sink write", func() error { return r.parts.Sink.Write(ctx, out) }); err != nil {
		p.ep.failed.Store(true)
		return
	}
	r.out.Add(int64(len(out)))
}

// attempt runs msgs through the flow once. It returns the output, which
// stays valid until the flow's next run, and the failure, if any: a run
// error, or a row rejected past the first layer (which cannot be traced to
// a message). rejected lists first-layer rejections, by message index.
func (w *worker) attempt(ctx context.Context, msgs []*stream.Message) (out []any, rejected []Rejected, fn string, err error) {
	w.rows = w.rows[:0]
	for _, m := range msgs {
		w.rows = append(w.rows, m.Payload)
	}
	res, rej, err := w.flow.Run(ctx, w.rows)
	clear(w.rows)
	if err != nil {
		return nil, nil, w.r.cfg.FuncOf(err), err
	}
	for _, rj := range rej {
		if rj.Layer > 0 {
			return nil, nil, rj.Func, fmt.Errorf("row rejected by %s: %w", rj.Func, rj.Err)
		}
	}
	return res, rej, "", nil
}

// group processes msgs: a failed run is retried up to retries times, then
// split in halves until the failing messages stand alone; those are retried
// by their function's policy and dead-lettered. It returns the output of the
// messages that succeeded, and false if the work context ended.
func (w *worker) group(ctx context.Context, p *part, msgs []*stream.Message, retries int) ([]any, bool) {
	r := w.r
	for try := 0; ; try++ {
		out, rej, fn, err := w.attempt(ctx, msgs)
		if ctx.Err() != nil {
			return nil, false
		}
		if err == nil {
			if len(rej) > 0 {
				out = append([]any(nil), out...) // single runs reuse the buffers
			}
			for _, rj := range rej {
				more, ok := w.single(ctx, p, msgs[rj.Index], 1, rj.Func, rj.Err)
				if !ok {
					return nil, false
				}
				out = append(out, more...)
			}
			return out, true
		}
		if len(msgs) == 1 {
			return w.single(ctx, p, msgs[0], 1, fn, err)
		}
		if try < retries {
			r.retries.Add(1)
			r.cfg.Logger.Warn("batch failed; retrying", "func", fn, "rows", len(msgs), "try", try+1, "err", err)
			if w.backoff(ctx, fn, try+1) != nil {
				return nil, false
			}
			continue
		}
		mid := len(msgs) / 2
		a, ok := w.group(ctx, p, msgs[:mid], 0)
		if !ok {
			return nil, false
		}
		a = append([]any(nil), a...) // the second half's runs reuse the buffers
		b, ok := w.group(ctx, p, msgs[mid:], 0)
		if !ok {
			return nil, false
		}
		return append(a, b...), true
	}
}

// single retries one message by the failing function's policy, having
// already made tried attempts, and dead-letters it when they run out.
func (w *worker) single(ctx context.Context, p *part, m *stream.Message, tried int, fn string, cause error) ([]any, bool) {
	r := w.r
	pol := r.cfg.PolicyFor(fn)
	for tried <= pol.Retries {
		r.retries.Add(1)
		if w.backoff(ctx, fn, tried) != nil {
			return nil, false
		}
		tried++
		out, rej, f, err := w.attempt(ctx, []*stream.Message{m})
		if ctx.Err() != nil {
			return nil, false
		}
		if err == nil && len(rej) == 0 {
			return append([]any(nil), out...), true
		}
		if err == nil {
			f, err = rej[0].Func, rej[0].Err
		}
		fn, cause = f, err
		pol = r.cfg.PolicyFor(fn)
	}
	dl := deadLetter(r.cfg.Name, fn, m, cause, tried)
	r.cfg.Logger.Error("message dead-lettered", "func", fn, "attempts", tried, "err", cause)
	p.ep.mu.Lock()
	p.ep.dead = append(p.ep.dead, dl)
	p.ep.deadOf = append(p.ep.deadOf, m)
	p.ep.mu.Unlock()
	return nil, true
}

func (w *worker) backoff(ctx context.Context, fn string, attempt int) error {
	return w.r.cfg.Sleep(ctx, filter.Backoff(w.r.cfg.PolicyFor(fn).Base, attempt))
}

func deadLetter(flow, fn string, m *stream.Message, cause error, attempts int) *stream.DeadLetter {
	return &stream.DeadLetter{
		Flow: flow, Func: fn, Error: cause.Error(), Attempts: attempts, ID: m.ID,
		Payload: dlqPayload(m.Payload), Position: m.Position, Headers: m.Headers, Time: time.Now().UTC(),
	}
}

// dlqPayload keeps JSON text readable in the dead-letter record.
func dlqPayload(p any) any {
	switch v := p.(type) {
	case string:
		if json.Valid([]byte(v)) {
			return json.RawMessage(v)
		}
	case []byte:
		if json.Valid(v) {
			return json.RawMessage(v)
		}
		return string(v)
	}
	return p
}
