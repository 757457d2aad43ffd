package file

import (
	"context"
	"io"
	"sync"
)

// liveReader reads a stream that may stay open with nothing to read
// (standard input fed by a pipe) in a goroutine of its own, so that a read
// gives up when its context is done: rows already read are processed while
// the writer keeps the stream open, rather than at its end.
type liveReader struct {
	ch      chan liveChunk
	done    chan struct{}
	close   sync.Once
	ctx     context.Context // of the current Read (see lineSource.Read); nil: none
	pending []byte
	err     error
}

type liveChunk struct {
	data []byte
	err  error
}

func newLiveReader(r io.Reader) *liveReader {
	l := &liveReader{ch: make(chan liveChunk), done: make(chan struct{})}
	go func() {
		for {
			buf := make([]byte, 64<<10)
			n, err := r.Read(buf)
			select {
			case l.ch <- liveChunk{buf[:n], err}:
			case <-l.done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return l
}

// Read returns what the stream gave, waiting for more no longer than the
// current context allows (its error then).
func (l *liveReader) Read(p []byte) (int, error) {
	for len(l.pending) == 0 {
		if l.err != nil {
			return 0, l.err
		}
		var done <-chan struct{}
		if l.ctx != nil {
			done = l.ctx.Done()
		}
		select {
		case c := <-l.ch:
			l.pending, l.err = c.data, c.err
		case <-done:
			return 0, l.ctx.Err()
		}
	}
	n := copy(p, l.pending)
	l.pending = l.pending[n:]
	return n, nil
}

// Close stops the goroutine once its pending read returns; it does not
// close the stream.
func (l *liveReader) Close() error {
	l.close.Do(func() { close(l.done) })
	return nil
}
