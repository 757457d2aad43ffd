package redis

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/internal/testenv"
	"github.com/kisflow-go/kisflow/stream"
)

// fill appends n rows {"n": i} to the stream key.
func fill(t *testing.T, r *Redis, key string, from, n int) {
	t.Helper()
	pipe := r.client.Pipeline()
	for i := from; i < from+n; i++ {
		pipe.XAdd(context.Background(), &goredis.XAddArgs{Stream: key, Values: []any{"data", fmt.Sprintf(`{"n":%d}`, i)}})
	}
	if _, err := pipe.Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// open opens the source of r in group with opts' logger.
func open(t *testing.T, r *Redis, group string, log *slog.Logger) *source {
	t.Helper()
	src, err := r.OpenSource(context.Background(), stream.SourceOptions{Name: group, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close(context.Background()) })
	return src.(*source)
}

// drain reads until a read of wait finds nothing, and returns what it read
// (failing after 100 reads: the entries of these tests take fewer).
func drain(t *testing.T, src *source, limit int, wait time.Duration) []*stream.Message {
	t.Helper()
	var out []*stream.Message
	for reads := 0; ; reads++ {
		if reads == 100 {
			t.Fatalf("still reading after %d reads and %d entries", reads, len(out))
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		msgs, err := src.Read(ctx, limit)
		done := ctx.Err() != nil
		cancel()
		out = append(out, msgs...)
		if err != nil {
			if !done {
				t.Fatalf("read: %v", err)
			}
			return out
		}
	}
}

// once fails the test when an ID appears twice, and returns the IDs.
func once(t *testing.T, msgs []*stream.Message) map[string]bool {
	t.Helper()
	ids := make(map[string]bool, len(msgs))
	for _, m := range msgs {
		if ids[m.ID] {
			t.Fatalf("entry %s handed out twice", m.ID)
		}
		ids[m.ID] = true
	}
	return ids
}

// A consumer restarted under its own name reads its pending history once,
// however many reads the runtime makes before acknowledging; entries given
// back with Nack are read once more.
func TestOwnPendingEntriesAreReadOnce(t *testing.T) {
	t.Parallel()
	key := testenv.Name("kisflow-test-")
	r := start(t, key, map[string]string{"mode": "stream", "consumer": "c1", "block": "20ms", "claim_idle": "1h"})
	const n = 500
	fill(t, r, key, 0, n)
	if got := len(drain(t, open(t, r, "g", nil), 100, 300*time.Millisecond)); got != n {
		t.Fatalf("first process read %d entries, want %d", got, n)
	}
	// The process died; a new one of the same consumer name reads on
	// without acknowledging, as a runtime with batches in flight does.
	src := open(t, r, "g", nil)
	got := drain(t, src, 100, 300*time.Millisecond)
	if ids := once(t, got); len(ids) != n {
		t.Fatalf("restarted consumer read %d distinct entries of its %d pending", len(ids), n)
	}
	back := got[:10]
	if err := src.Nack(context.Background(), back, errors.New("shutdown")); err != nil {
		t.Fatal(err)
	}
	again := drain(t, src, 100, 300*time.Millisecond)
	ids := once(t, again)
	if len(again) != len(back) {
		t.Fatalf("after a Nack of %d entries %d were read again, want those %d", len(back), len(again), len(back))
	}
	for _, m := range back {
		if !ids[m.ID] {
			t.Fatalf("nacked entry %s not read again", m.ID)
		}
	}
}

// lateTimer is a context whose deadline has passed before it reports it is
// done: a timer that fires late on a busy machine.
type lateTimer struct {
	context.Context
	deadline time.Time
}

func (c lateTimer) Deadline() (time.Time, bool) { return c.deadline, true }

// An empty poll is not an error: a read that finds nothing before its
// deadline returns an error only once its context is done, so the runtime
// ends the batch instead of failing the flow; and that error names the
// connector, the stream and the group.
func TestEmptyPollIsNotAnError(t *testing.T) {
	t.Parallel()
	key := testenv.Name("kisflow-test-")
	r := start(t, key, map[string]string{"mode": "stream", "block": "1s"})
	src := open(t, r, "g", nil)
	for range 5 {
		base, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		ctx := lateTimer{base, time.Now().Add(20 * time.Millisecond)}
		msgs, err := src.Read(ctx, 10)
		done := ctx.Err() != nil
		cancel()
		if len(msgs) != 0 {
			t.Fatalf("read %d entries of an empty stream", len(msgs))
		}
		if err != nil && !done {
			t.Fatalf("an empty poll failed before its context was done: %v", err)
		}
		if err == nil || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("want the context's error once it is done, got %v", err)
		}
		for _, part := range []string{`"r"`, key, "group g"} {
			if !strings.Contains(err.Error(), part) {
				t.Fatalf("error %q does not name %s", err, part)
			}
		}
	}
}

// logBuffer is a slog handler's output, safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A group that Redis lost (restarted without persistence, the stream
// deleted) is created again, with a warning, and reading goes on.
func TestLostGroupIsRecreated(t *testing.T) {
	t.Parallel()
	key := testenv.Name("kisflow-test-")
	r := start(t, key, map[string]string{"mode": "stream", "block": "20ms"})
	var logs logBuffer
	src := open(t, r, "g", slog.New(slog.NewTextHandler(&logs, nil)))
	fill(t, r, key, 0, 3)
	if got := drain(t, src, 10, 200*time.Millisecond); len(got) != 3 {
		t.Fatalf("read %d, want 3", len(got))
	}
	if err := r.client.Del(context.Background(), key).Err(); err != nil {
		t.Fatal(err)
	}
	if got := drain(t, src, 10, 200*time.Millisecond); len(got) != 0 {
		t.Fatalf("read %d entries of a deleted stream", len(got))
	}
	if !strings.Contains(logs.String(), "re-created") {
		t.Fatalf("no warning about the lost group; log: %s", logs.String())
	}
	fill(t, r, key, 3, 4)
	if got := drain(t, src, 10, 200*time.Millisecond); len(got) != 4 {
		t.Fatalf("read %d entries after the group was re-created, want 4", len(got))
	}
}

// A key of another type where the stream should be is a configuration
// error: it ends the job (stream.Fatal), naming connector, stream and group.
func TestWrongTypeStreamKeyIsFatal(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	key := testenv.Name("kisflow-test-")
	r := start(t, key, map[string]string{"mode": "stream", "block": "20ms"})
	r.client.Set(ctx, key, "not a stream", 0)
	_, err := r.OpenSource(ctx, stream.SourceOptions{Name: "g"})
	if !stream.IsFatal(err) || !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "group g") {
		t.Fatalf("opening a source on a string key: %v", err)
	}
	r.client.Del(ctx, key)
	src := open(t, r, "g", nil)
	r.client.Del(ctx, key)
	r.client.Set(ctx, key, "not a stream", 0)
	_, err = src.Read(ctx, 10)
	if !stream.IsFatal(err) || !strings.Contains(err.Error(), "WRONGTYPE") {
		t.Fatalf("reading a string key: %v", err)
	}
}

// A Redis restart is weather: reads and acknowledgements fail while the
// server is down with transient errors (not marked fatal) naming the
// stream, and work again once it is back; the group and the pending
// entries survive (the private server keeps an append-only file).
func TestSourceRidesOutARedisRestart(t *testing.T) {
	srv := testenv.PrivateRedis(t)
	t.Setenv(testenv.Redis.Env, fmt.Sprintf("127.0.0.1:%d", srv.Port()))
	ctx := context.Background()
	key := testenv.Name("kisflow-test-")
	r := start(t, key, map[string]string{"mode": "stream", "block": "20ms", "timeout": "500ms"})
	const n = 100
	fill(t, r, key, 0, n)
	src := open(t, r, "g", nil)
	first, err := src.Read(ctx, n/2)
	if err != nil || len(first) != n/2 {
		t.Fatalf("read %d: %v", len(first), err)
	}
	_ = r.client.ShutdownSave(ctx).Err() // the server goes away; its reply is the closed connection
	if _, err := src.Read(ctx, 10); err == nil || stream.IsFatal(err) || errors.Is(err, io.EOF) || !strings.Contains(err.Error(), key) {
		t.Fatalf("read with the server down: %v, want a transient error naming the stream (not io.EOF: the end of a bounded source)", err)
	}
	if err := src.Ack(ctx, first); err == nil || stream.IsFatal(err) {
		t.Fatalf("ack with the server down: %v, want a transient error", err)
	}
	srv.Restart(t)
	if err := src.Ack(ctx, first); err != nil {
		t.Fatalf("ack after the restart: %v", err)
	}
	rest := drain(t, src, n, 300*time.Millisecond)
	ids := once(t, append(first, rest...))
	if len(ids) != n {
		t.Fatalf("%d distinct entries read across the restart, want %d", len(ids), n)
	}
	if err := src.Ack(ctx, rest); err != nil {
		t.Fatal(err)
	}
	if p, err := r.client.XPending(ctx, key, "g").Result(); err != nil || p.Count != 0 {
		t.Fatalf("pending after acknowledging everything: %+v %v", p, err)
	}
}

// Refused credentials end the job, and a password given in a redis:// URL
// shows in no error and in nothing go-redis logs.
func TestCredentialsAreFatalAndNeverPrinted(t *testing.T) {
	srv := testenv.PrivateRedis(t)
	ctx := context.Background()
	addr := fmt.Sprintf("127.0.0.1:%d", srv.Port())
	admin := goredis.NewClient(&goredis.Options{Addr: addr})
	defer admin.Close()
	if err := admin.ConfigSet(ctx, "requirepass", "right-pass-7").Err(); err != nil {
		t.Fatal(err)
	}
	var redisLog logBuffer
	goredis.SetLogger(&printer{&redisLog}) // go-redis has only a process-wide logger
	t.Cleanup(func() { goredis.SetLogger(&printer{os.Stderr}) })
	key := testenv.Name("kisflow-test-")
	for _, c := range []struct {
		name, addrs string
		params      map[string]string
		wantErr     bool
	}{
		{"URL with the password", "redis://default:right-pass-7@" + addr + "/0", nil, false},
		{"URL with a wrong password", "redis://default:s3cret-wrong@" + addr, nil, true},
		{"password param", addr, map[string]string{"password": "s3cret-wrong"}, true},
		{"no password", addr, nil, true},
		{"nothing listening", "redis://u:s3cret-wrong@127.0.0.1:1", map[string]string{"timeout": "100ms"}, true},
		{"bad URL", "redis://u:s3cret-wrong@" + addr + "/x", nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			params := map[string]string{"mode": "stream"}
			for k, v := range c.params {
				params[k] = v
			}
			d, err := New(&config.Conn{CName: "r", Type: Type, Addrs: c.addrs, Key: key, Params: params})
			if err == nil {
				err = d.(*Redis).Start(ctx)
				defer d.(*Redis).Close(ctx)
			}
			if (err != nil) != c.wantErr {
				t.Fatalf("error %v, want one: %v", err, c.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("the password is in the error: %v", err)
			}
			if c.wantErr && c.name != "nothing listening" && c.name != "bad URL" && !stream.IsFatal(err) {
				t.Fatalf("refused credentials not marked fatal: %v", err)
			}
		})
	}
	if strings.Contains(redisLog.String(), "s3cret") || strings.Contains(redisLog.String(), "right-pass") {
		t.Fatalf("the password is in go-redis's log: %s", redisLog.String())
	}
}

// printer is a go-redis logger writing to w.
type printer struct{ w io.Writer }

func (p *printer) Printf(_ context.Context, format string, v ...any) {
	fmt.Fprintf(p.w, format+"\n", v...)
}

// A key of another type where the sink writes is the row's failure: the
// runtime dead-letters it (stream.Permanent); a lost server is not.
func TestSinkWrongTypeIsPermanent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prefix := testenv.Name("kisflow-test-")
	for _, mode := range []string{"hash", "list"} {
		r := start(t, prefix+mode+":{id}", map[string]string{"mode": mode})
		r.client.Set(ctx, prefix+mode+":2", "a string", 0)
		err := r.Write(ctx, []any{map[string]any{"id": 1}, map[string]any{"id": 2}})
		if !stream.IsPermanent(err) || stream.IsFatal(err) {
			t.Fatalf("%s: write over a string key: %v, want a permanent error", mode, err)
		}
		err = r.Write(ctx, []any{map[string]any{"no id": 1}})
		if !stream.IsPermanent(err) {
			t.Fatalf("%s: a row without its key field: %v, want a permanent error", mode, err)
		}
	}
	d, err := New(&config.Conn{CName: "r", Type: Type, Addrs: "127.0.0.1:1", Key: prefix + "{id}", Params: map[string]string{"timeout": "100ms"}})
	if err != nil {
		t.Fatal(err)
	}
	r := d.(*Redis)
	r.client = goredis.NewUniversalClient(r.opts)
	defer r.client.Close()
	if err := r.Write(ctx, []any{map[string]any{"id": 1}}); err == nil || stream.IsPermanent(err) || stream.IsFatal(err) {
		t.Fatalf("write with no server: %v, want a transient error", err)
	}
}

// Several addrs make a cluster client, master_name a sentinel one, one
// address a plain client; a cluster refuses a db other than 0.
func TestAddrsChooseTheClient(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		addrs  string
		params map[string]string
		want   string
	}{
		{"127.0.0.1:7001", nil, "*redis.Client server"},
		{"redis://127.0.0.1:7001/2", nil, "*redis.Client server"},
		{"127.0.0.1:7001,127.0.0.1:7002", nil, "*redis.ClusterClient cluster"},
		{"127.0.0.1:7001", map[string]string{"cluster": "true"}, "*redis.ClusterClient cluster"},
		{"127.0.0.1:26379,127.0.0.1:26380", map[string]string{"master_name": "m"}, "*redis.Client sentinels"},
		{"127.0.0.1:7001,127.0.0.1:7002", map[string]string{"db": "3"}, "error"},
	} {
		d, err := New(&config.Conn{CName: "r", Type: Type, Addrs: c.addrs, Key: "k", Params: c.params})
		got := "error"
		if err == nil {
			r := d.(*Redis)
			cl := goredis.NewUniversalClient(r.opts)
			got = fmt.Sprintf("%T %s", cl, strings.Fields(r.where())[0])
			cl.Close()
		}
		if got != c.want {
			t.Errorf("addrs %s %v: %s, want %s (%v)", c.addrs, c.params, got, c.want, err)
		}
	}
}

// takeover measures how long the survivor of two consumers takes to finish
// the n entries a killed consumer left pending: from the kill until it has
// acknowledged them all. The survivor holds n entries of its own in flight
// meanwhile (batches waiting for a slow sink), which it must neither claim
// back from itself nor lose to a claim. It returns the time from the kill,
// and from the first claimed batch to the last acknowledgement.
func takeover(t *testing.T, n int, claimIdle time.Duration) (total, work time.Duration) {
	key := testenv.Name("kisflow-test-")
	params := func(consumer string) map[string]string {
		return map[string]string{"mode": "stream", "consumer": consumer, "claim_idle": claimIdle.String(), "block": "100ms"}
	}
	rb := start(t, key, params("b"))
	ra := start(t, key, params("a"))
	survivor := open(t, rb, "g", nil)
	fill(t, rb, key, 0, n)
	held := drain(t, survivor, 500, 200*time.Millisecond)
	if len(held) != n {
		t.Fatalf("the survivor read %d entries, want %d", len(held), n)
	}
	fill(t, ra, key, n, n)
	victim := open(t, ra, "g", nil)
	if got := len(drain(t, victim, 500, 200*time.Millisecond)); got != n {
		t.Fatalf("the consumer to kill read %d entries, want %d", got, n)
	}
	_ = victim.Close(context.Background()) // it dies: no acknowledgement, no keep-alive
	killed := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 4*claimIdle)
	defer cancel()
	seen := once(t, held)
	var first time.Time
	for taken := 0; taken < n; {
		msgs, err := survivor.Read(ctx, 500)
		if err != nil {
			t.Fatalf("survivor after %v, %d of %d entries taken over: %v", time.Since(killed), taken, n, err)
		}
		if first.IsZero() {
			first = time.Now()
		}
		if err := survivor.Ack(ctx, msgs); err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if seen[m.ID] {
				t.Fatalf("entry %s delivered twice", m.ID)
			}
			seen[m.ID] = true
		}
		taken += len(msgs)
	}
	total, work = time.Since(killed), time.Since(first)
	if err := survivor.Ack(ctx, held); err != nil {
		t.Fatal(err)
	}
	if p, err := rb.client.XPending(ctx, key, "g").Result(); err != nil || p.Count != 0 {
		t.Fatalf("pending after the takeover: %+v %v", p, err)
	}
	return total, work
}

// The survivor of two consumers of a group takes over the entries the
// other left pending within claim_idle and a margin, at full speed, and
// claims none of the entries it is still working on.
func TestTakeoverWithinClaimIdle(t *testing.T) {
	t.Parallel()
	const n, claimIdle = 5000, 3 * time.Second
	total, work := takeover(t, n, claimIdle)
	t.Logf("takeover of %d entries with claim_idle %v: %v after the kill; %v from the first claimed batch to the last acknowledgement (%.0f entries/s)",
		n, claimIdle, total.Round(time.Millisecond), work.Round(time.Millisecond), float64(n)/work.Seconds())
	if limit := claimIdle + 1500*time.Millisecond; total > limit {
		t.Fatalf("takeover took %v, more than claim_idle + 1.5s = %v", total, limit)
	}
}

// A read whose reply is lost with its connection may have delivered
// entries to this consumer that it never saw: the source reads its pending
// history again after the failed read, instead of leaving them until
// claim_idle.
func TestEntriesOfALostReplyAreReadAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	addr := testenv.Redis.Addr(t)
	proxy := testenv.NewProxy(t, addr)
	key := testenv.Name("kisflow-test-")
	admin := start(t, key, map[string]string{"mode": "stream"})
	d, err := New(&config.Conn{CName: "r", Type: Type, Addrs: proxy.Addr(), Key: key,
		Params: map[string]string{"mode": "stream", "consumer": "c1", "block": "5s", "claim_idle": "1h", "client_name": key}})
	if err != nil {
		t.Fatal(err)
	}
	r := d.(*Redis)
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	src := open(t, r, "g", nil)
	if got := drain(t, src, 10, 100*time.Millisecond); len(got) != 0 {
		t.Fatalf("read %d entries of an empty stream", len(got))
	}
	// Entries delivered to c1 whose reply never arrived.
	fill(t, admin, key, 0, 5)
	if err := admin.client.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "g", Consumer: "c1", Streams: []string{key, ">"}, Count: 5}).Err(); err != nil {
		t.Fatal(err)
	}
	type result struct {
		msgs []*stream.Message
		err  error
	}
	read := make(chan result, 1)
	go func() {
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		msgs, err := src.Read(rctx, 10) // blocks: nothing new
		if rctx.Err() != nil {
			err = nil // nothing within the deadline
		}
		read <- result{msgs, err}
	}()
	waitFor(t, "the source's read blocked on the server", func() bool {
		list, _ := admin.client.ClientList(ctx).Result()
		for _, line := range strings.Split(list, "\n") {
			if strings.Contains(line, "name="+key) && strings.Contains(line, "cmd=xreadgroup") && strings.Contains(line, "flags=b") {
				return true
			}
		}
		return false
	})
	proxy.Cut(t)
	// The read tries again by itself; an error it gives up with is
	// transient, and never io.EOF (the end of a bounded source).
	res := <-read
	if err := res.err; err != nil && (stream.IsFatal(err) || errors.Is(err, io.EOF)) {
		t.Fatalf("a read whose connection was cut: %v, want a transient error", err)
	}
	got := append(res.msgs, drain(t, src, 10, 300*time.Millisecond)...)
	if ids := once(t, got); len(ids) != 5 {
		t.Fatalf("read %d of the 5 entries delivered before the cut", len(ids))
	}
}
