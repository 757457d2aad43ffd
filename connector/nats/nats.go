// Package nats provides the connector type nats: NATS JetStream (nats.go).
//
//   - The source reads a stream through a durable pull consumer (one per
//     flow unless params.durable names it), so several processes share the
//     work; messages are acknowledged after the flow, redelivered after
//     ack_wait when not, without limit by default. With max_deliver set,
//     a message's max_deliver-th delivery goes to the dead-letter path
//     instead of the flow (JetStream delivers it no more), so that it does
//     not vanish.
//   - The sink (and Save) publishes each row as JSON and waits for the
//     stream's acknowledgement; every message carries a message ID (the
//     msg_id template over the row, or a hash of the row), so a retried
//     write within the stream's duplicate window is not stored twice.
//
// Its params are declared in Spec (`kisflow list nats`).
package nats

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/driver/fields"
	"github.com/kisflow-go/kisflow/stream"
)

// Type is the connector type this package registers.
const Type = "nats"

// Install registers the nats connector type and the shared connection
// plugin type.
func Install(reg *kisflow.Registry) error {
	if err := reg.RegisterConnector(Spec, New); err != nil {
		return err
	}
	return reg.RegisterPlugin(PluginSpec)
}

type params struct {
	Stream        string        `param:"stream" required:"true" doc:"the JetStream stream"`
	Create        bool          `param:"create" default:"false" doc:"create or update the stream at start, with the key as its subjects"`
	Durable       string        `param:"durable" doc:"the durable pull consumer of the source (else one per flow, named after it); members of one durable share the stream"`
	AckWait       time.Duration `param:"ack_wait" default:"30s" min:"1ms" doc:"how long a delivered message waits for its acknowledgement before it is delivered again"`
	MaxDeliver    int           `param:"max_deliver" default:"-1" min:"-1" doc:"deliveries of a message before it goes to the dead-letter path instead of the flow; -1: no limit"`
	MaxAckPending int           `param:"max_ack_pending" default:"20000" min:"1" doc:"messages delivered and not yet acknowledged"`
	Prefetch      int           `param:"prefetch" default:"2000" min:"1" doc:"messages pulled ahead; members of one durable share the stream in such amounts"`
	MsgID         string        `param:"msg_id" doc:"the message ID template over the row (else a hash of the row): a retried write within the stream's duplicate window is not stored twice" example:"order-{id}"`
	User          string        `param:"user" doc:"the user name (with password)"`
	Password      string        `param:"password" secret:"true" doc:"the user's password"`
	Token         string        `param:"token" secret:"true" doc:"an authentication token"`
	Creds         string        `param:"creds" doc:"a credentials file, relative to the YAML file's folder"`
	TLS           bool          `param:"tls" default:"false" doc:"connect with TLS"`
	Timeout       time.Duration `param:"timeout" default:"5s" min:"1ms" doc:"connect and requests"`
	Client        string        `param:"client" doc:"the name of a shared connection configured as plugins.nats.<name> in the global file; the connection params are then the plugin's"`
}

// Spec declares the nats connector's addrs, key and params.
var Spec = func() *driver.Spec {
	s := driver.MustSpec[params](Type, "NATS JetStream: a durable pull consumer source, a sink deduplicated by message ID")
	s.Addrs = "the server URLs, comma-separated (default nats://127.0.0.1:4222)"
	s.Key = "the subject; for the sink a template such as orders.{region}; required"
	return s
}()

// NATS is the driver. It is safe for concurrent use.
type NATS struct {
	linkMu   sync.Mutex
	lastDown time.Time // when connected last found the connection down

	cfg        *config.Conn
	urls       string
	opts       []natsgo.Option
	subject    *fields.Template
	streamName string
	create     bool
	durable    string
	ackWait    time.Duration
	maxDeliver int
	maxPending int
	prefetch   int
	msgID      *fields.Template
	timeout    time.Duration
	client     string // the shared connection's plugin name, or ""

	nc     *natsgo.Conn
	js     jetstream.JetStream
	shared *ClientPlugin // set by UsePlugins: the connection is the plugin's
}

// New builds the driver from its config; it does not connect.
func New(cfg *config.Conn) (driver.Driver, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("nats connector %q: %s", cfg.CName, fmt.Sprintf(format, args...))
	}
	var p params
	if err := Spec.Decode(cfg, &p); err != nil {
		return nil, err
	}
	n := &NATS{cfg: cfg, urls: cfg.Addrs, streamName: p.Stream, create: p.Create, durable: p.Durable, client: p.Client,
		ackWait: p.AckWait, timeout: p.Timeout, prefetch: p.Prefetch, maxPending: p.MaxAckPending, maxDeliver: p.MaxDeliver}
	if n.urls == "" {
		n.urls = natsgo.DefaultURL
	}
	if cfg.Key == "" {
		return nil, bad("key (the subject) is required")
	}
	// -1 (no limit) is the default, as the runtime retries and
	// dead-letters rows itself and a delivery cut short by a crash must
	// not use up a healthy message's attempts.
	if n.maxDeliver == 0 {
		return nil, bad("param max_deliver: 0 delivers nothing (want at least 1, or -1 for no limit)")
	}
	var err error
	if n.subject, err = fields.ParseTemplate(cfg.Key); err != nil {
		return nil, bad("%v", err)
	}
	if p.MsgID != "" {
		if n.msgID, err = fields.ParseTemplate(p.MsgID); err != nil {
			return nil, bad("%v", err)
		}
	}
	n.opts = []natsgo.Option{natsgo.Name("kisflow-" + cfg.CName), natsgo.Timeout(n.timeout), natsgo.MaxReconnects(-1), natsgo.ReconnectWait(250 * time.Millisecond)}
	creds := p.Creds
	if creds != "" {
		creds = cfg.Path(creds)
	}
	n.opts = append(n.opts, authOptions(creds, p.Token, p.User, p.Password)...)
	if p.TLS {
		n.opts = append(n.opts, natsgo.Secure(&tls.Config{MinVersion: tls.VersionTLS12}))
	}
	return n, nil
}

// Start connects and, with create, creates or updates the stream.
func (n *NATS) Start(ctx context.Context) error {
	var nc *natsgo.Conn
	if n.shared != nil {
		nc = n.shared.Conn()
	} else {
		var err error
		if nc, err = natsgo.Connect(n.urls, n.opts...); err != nil {
			return n.cfg.Redactor().Error(fmt.Errorf("nats %s: %w", config.Redact(n.urls), err))
		}
	}
	closeOwn := func() {
		if n.shared == nil {
			nc.Close()
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		closeOwn()
		return n.cfg.Redactor().Error(fmt.Errorf("nats %s: %w", config.Redact(n.urls), err))
	}
	if n.create {
		subj := n.cfg.Key
		if !n.subject.Static() {
			subj = templateWildcard(n.cfg.Key)
		}
		cctx, cancel := context.WithTimeout(ctx, n.timeout)
		_, err = js.CreateOrUpdateStream(cctx, jetstream.StreamConfig{Name: n.streamName, Subjects: []string{subj}, Duplicates: 2 * time.Minute})
		cancel()
		if err != nil {
			closeOwn()
			return fmt.Errorf("nats connector %q: create stream %s: %w", n.cfg.CName, n.streamName, err)
		}
	}
	n.nc, n.js = nc, js
	return nil
}

// templateWildcard turns a subject template into the subjects it covers:
// orders.{region} -> orders.*.
func templateWildcard(t string) string {
	parts := strings.Split(t, ".")
	for i, p := range parts {
		if strings.Contains(p, "{") {
			parts[i] = "*"
		}
	}
	return strings.Join(parts, ".")
}

// Close closes the connection (a shared one stays open for the others; its
// plugin closes it).
func (n *NATS) Close(context.Context) error {
	if n.nc == nil || n.shared != nil {
		return nil
	}
	n.nc.Close()
	return nil
}

// Conn is the NATS connection; JetStream is its JetStream context.
func (n *NATS) Conn() *natsgo.Conn { return n.nc }

// JetStream returns the JetStream context.
func (n *NATS) JetStream() jetstream.JetStream { return n.js }

// Write publishes rows and waits until the stream stored each of them.
func (n *NATS) Write(ctx context.Context, rows []any) error {
	var hdr natsgo.Header
	stream.InjectTrace(ctx, func(key, value string) {
		if hdr == nil {
			hdr = natsgo.Header{}
		}
		hdr.Set(key, value)
	})
	futures := make([]jetstream.PubAckFuture, 0, len(rows))
	for i, row := range rows {
		m, subj, data, err := fields.Encode(row, n.subject)
		if err != nil {
			return stream.Permanent(fmt.Errorf("nats connector %q: row %d: %w", n.cfg.CName, i, err))
		}
		id := ""
		if n.msgID != nil {
			if id, err = n.msgID.Expand(m); err != nil {
				return stream.Permanent(fmt.Errorf("nats connector %q: row %d: %w", n.cfg.CName, i, err))
			}
		} else {
			sum := sha256.Sum256(append([]byte(subj+"\x00"), data...))
			id = hex.EncodeToString(sum[:16])
		}
		f, err := n.js.PublishMsgAsync(&natsgo.Msg{Subject: subj, Data: data, Header: maps.Clone(hdr)}, jetstream.WithMsgID(id), jetstream.WithExpectStream(n.streamName))
		if err != nil {
			return refused(fmt.Errorf("nats connector %q: publish: %w", n.cfg.CName, err))
		}
		futures = append(futures, f)
	}
	wctx, cancel := context.WithTimeout(ctx, n.timeout+time.Duration(len(rows))*time.Millisecond)
	defer cancel()
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return refused(fmt.Errorf("nats connector %q: publish: %w", n.cfg.CName, err))
		case <-wctx.Done():
			return fmt.Errorf("nats connector %q: publish: no acknowledgement from the stream: %w", n.cfg.CName, wctx.Err())
		}
	}
	return nil
}

// OpenSource creates or updates the durable pull consumer and starts
// listening for its max-deliveries advisories (for a last delivery that
// was not acknowledged, such as one a crash cut short while the source
// still listens).
func (n *NATS) OpenSource(ctx context.Context, opts stream.SourceOptions) (stream.Source, error) {
	durable := n.durable
	if durable == "" {
		durable = opts.Name
	}
	cfg := n.consumerConfig(durable)
	cctx, cancel := context.WithTimeout(ctx, n.timeout)
	defer cancel()
	st, err := n.js.Stream(cctx, n.streamName)
	if err != nil {
		return nil, fmt.Errorf("nats connector %q: stream %s: %w", n.cfg.CName, n.streamName, err)
	}
	var b *natsBounds
	if !opts.Stop.IsZero() {
		if b, err = n.stopOf(cctx, st, opts.Stop); err != nil {
			return nil, err
		}
	}
	var cons jetstream.Consumer
	switch {
	case opts.Detached:
		// A one-off run: an ephemeral consumer, the durable left as it is.
		cfg.Durable, cfg.InactiveThreshold = "", time.Minute
		if err := startAt(&cfg, opts.Start); err != nil {
			return nil, fmt.Errorf("nats connector %q: %w", n.cfg.CName, err)
		}
		durable = "(one-off)"
		cons, err = n.js.CreateConsumer(cctx, n.streamName, cfg)
	case !opts.Start.IsZero():
		cons, err = n.recreate(cctx, cfg, opts.Start)
	default:
		if old, err := n.js.Consumer(cctx, n.streamName, durable); err == nil {
			// Its deliver policy cannot change: keep the one it was
			// created with (kisflow positions set may have chosen it).
			c := old.CachedInfo().Config
			cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = c.DeliverPolicy, c.OptStartSeq, c.OptStartTime
		}
		cons, err = n.js.CreateOrUpdateConsumer(cctx, n.streamName, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("nats connector %q: consumer %s on %s: %w", n.cfg.CName, durable, n.streamName, err)
	}
	// A continuous pull keeps requests outstanding, so messages are on
	// their way while the previous batch runs.
	it, err := cons.Messages(jetstream.PullMaxMessages(n.prefetch))
	if err != nil {
		return nil, fmt.Errorf("nats connector %q: consume %s: %w", n.cfg.CName, durable, err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &source{n: n, it: it, stream: st, cons: cons, exhausted: make(chan uint64, 1024), bounds: b, log: log}
	advisory := fmt.Sprintf("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.%s.%s", n.streamName, durable)
	if s.sub, err = n.nc.Subscribe(advisory, s.onAdvisory); err != nil {
		return nil, fmt.Errorf("nats connector %q: subscribe to %s: %w", n.cfg.CName, advisory, err)
	}
	return s, nil
}

// consumerConfig is the durable pull consumer's config.
func (n *NATS) consumerConfig(durable string) jetstream.ConsumerConfig {
	cfg := jetstream.ConsumerConfig{
		Durable: durable, AckPolicy: jetstream.AckExplicitPolicy, AckWait: n.ackWait,
		MaxDeliver: n.maxDeliver, DeliverPolicy: jetstream.DeliverAllPolicy,
		// The runtime holds several batches unacknowledged while they run;
		// JetStream's default of 1000 would stall deliveries.
		MaxAckPending: n.maxPending,
	}
	if n.subject.Static() {
		cfg.FilterSubject = n.cfg.Key
	}
	return cfg
}

type source struct {
	n         *NATS
	it        jetstream.MessagesContext
	stream    jetstream.Stream
	cons      jetstream.Consumer
	sub       *natsgo.Subscription
	exhausted chan uint64  // stream sequences JetStream gave up on
	bounds    *natsBounds  // the stop (stream.stop), nil for none
	log       *slog.Logger // the runner's
	down      bool         // the last Read found the connection down (only Read uses it)
	closeOnce sync.Once
}

// Lag is the number of messages the durable consumer has not had
// acknowledged: not delivered yet (num_pending) plus delivered and waiting
// for an ack (num_ack_pending), asked of the server.
func (s *source) Lag(ctx context.Context) (int64, error) {
	info, err := s.cons.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("nats source %s: consumer info: %w", s.n.streamName, err)
	}
	return int64(info.NumPending) + int64(info.NumAckPending), nil
}

func (s *source) onAdvisory(m *natsgo.Msg) {
	var adv struct {
		StreamSeq uint64 `json:"stream_seq"`
	}
	if json.Unmarshal(m.Data, &adv) == nil && adv.StreamSeq > 0 {
		select {
		case s.exhausted <- adv.StreamSeq:
		default: // full: it stays in the stream, and the advisory is logged by the server
		}
	}
}

// Read fetches up to max messages, waiting at most until ctx's deadline
// (or a second) for the first. Messages JetStream stopped redelivering come
// back marked Failed, for the dead-letter path.
//
// While the connection to NATS is down (the client reconnecting), Read
// returns an error that says so, not marked fatal: the runtime reports the
// outage and retries, and the client reconnects in the background. The
// first Read once it is connected again returns nothing and no error, so
// that the source is seen to be back even while no message comes.
func (s *source) Read(ctx context.Context, limit int) ([]*stream.Message, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := s.n.connected(); err != nil {
			s.down = true
			return nil, fmt.Errorf("nats source %s: %w", s.n.streamName, err)
		}
		if s.down {
			// Connected again, and it held: an empty read tells the
			// runtime the source is back, before any message arrives.
			s.down = false
			return nil, nil
		}
		select {
		case seq := <-s.exhausted:
			raw, err := s.stream.GetMsg(ctx, seq)
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				continue // already deleted from the stream
			}
			return []*stream.Message{{
				Payload: raw.Data, ID: strconv.FormatUint(seq, 10), Headers: flatten(raw.Header),
				Failed: s.n.exhausted(),
			}}, nil
		default:
		}
		if s.bounds.reached() {
			return nil, io.EOF // the stop position is reached
		}
		// Wait up to a second for the first message (then look for
		// exhausted ones again), and take what else is already here.
		wait := time.Second
		if s.bounds != nil {
			wait = 200 * time.Millisecond
		}
		wctx, cancel := context.WithTimeout(ctx, wait)
		m, err := s.it.Next(jetstream.NextContext(wctx))
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(err, context.DeadlineExceeded) || noMessages(err) {
				if s.bounds != nil {
					if err := s.bounds.settled(ctx, s.stream, s.cons, s.log); err != nil {
						return nil, fmt.Errorf("nats source %s: %w", s.n.streamName, err)
					}
				}
				continue
			}
			return nil, fmt.Errorf("nats source %s: %w", s.n.streamName, err)
		}
		out := make([]*stream.Message, 0, min(limit, 1024))
		slab := make([]stream.Message, 0, min(limit, 1024))
		for {
			if meta, err := m.Metadata(); err == nil && s.bounds.past(m, meta) {
				// At or past the stop: the next run reads it. The stop is
				// reached once every message before it is acknowledged.
				if len(out) > 0 {
					return out, nil
				}
				if err := s.bounds.settled(ctx, s.stream, s.cons, s.log); err != nil {
					return nil, fmt.Errorf("nats source %s: %w", s.n.streamName, err)
				}
				break
			} else if err == nil {
				slab = append(slab, stream.Message{
					Payload: m.Data(), Handle: m, ID: strconv.FormatUint(meta.Sequence.Stream, 10),
					Headers: flatten(natsgo.Header(m.Headers())), Failed: s.lastDelivery(meta),
				})
				out = append(out, &slab[len(slab)-1])
			}
			if len(out) >= limit || len(slab) == cap(slab) {
				return out, nil
			}
			if m, err = s.it.Next(jetstream.NextMaxWait(time.Millisecond)); err != nil {
				return out, nil
			}
		}
	}
}

// upAfter is how long a connection must hold after an outage before the
// source counts as back.
const upAfter = time.Second

// connected returns nil while the connection to NATS is up and has held
// for upAfter since it was last found down (a server shutting down may take
// a reconnect for a moment), else an error naming its state.
func (n *NATS) connected() error {
	n.linkMu.Lock()
	defer n.linkMu.Unlock()
	if st := n.nc.Status(); st != natsgo.CONNECTED && !n.nc.IsDraining() {
		n.lastDown = time.Now()
		return fmt.Errorf("NATS %s not connected (%s)", config.Redact(n.urls), strings.ToLower(st.String()))
	}
	if !n.lastDown.IsZero() {
		if up := time.Since(n.lastDown); up < upAfter {
			return fmt.Errorf("NATS %s reconnected %v ago; waiting for it to hold", config.Redact(n.urls), up.Round(time.Millisecond))
		}
	}
	return nil
}

// lastDelivery is the dead-letter reason for a message delivered for the
// max_deliver-th time, nil for any other. JetStream delivers it no more
// after that, and tells so only in an advisory to whoever listens at the
// time (not a process that was killed with the message in hand): the
// source sends it to the dead-letter path itself, and the acknowledgement
// that follows the dead-letter record ends it.
func (s *source) lastDelivery(meta *jetstream.MsgMetadata) error {
	if s.n.maxDeliver < 1 || meta.NumDelivered < uint64(s.n.maxDeliver) {
		return nil
	}
	return s.n.exhausted()
}

// exhausted is why a message goes to the dead-letter path after
// max_deliver deliveries.
func (n *NATS) exhausted() error {
	return fmt.Errorf("NATS stopped redelivering it after max_deliver (%d) attempts", n.maxDeliver)
}

// noMessages reports the outcome of a fetch that waited its time.
func noMessages(err error) bool {
	return errors.Is(err, natsgo.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages)
}

func flatten(h natsgo.Header) map[string]string {
	if len(h) == 0 {
		return nil
	}
	out := make(map[string]string, len(h))
	for k, v := range h {
		if len(v) > 0 {
			out[k] = v[0]
		}
	}
	return out
}

// Ack acknowledges messages. The acknowledgements are not waited for: one
// that is lost makes JetStream redeliver the message after ack_wait, which
// at-least-once allows and an exactly-once sink recognises by its ID.
func (s *source) Ack(_ context.Context, msgs []*stream.Message) error {
	// While the connection is down, an acknowledgement only waits in the
	// client's buffer: it is retried, and the source is not taken for back.
	if err := s.n.connected(); err != nil {
		return fmt.Errorf("nats source %s: ack: %w", s.n.streamName, err)
	}
	for _, m := range msgs {
		jm, ok := m.Handle.(jetstream.Msg)
		if !ok {
			continue // a dead-lettered message fetched from the stream
		}
		if err := jm.Ack(); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
			return fmt.Errorf("nats source %s: ack: %w", s.n.streamName, err)
		}
	}
	return nil
}

// Nack asks for immediate redelivery of messages that were not processed.
func (s *source) Nack(_ context.Context, msgs []*stream.Message, _ error) error {
	for _, m := range msgs {
		if jm, ok := m.Handle.(jetstream.Msg); ok {
			_ = jm.Nak() // best effort: ack_wait redelivers it anyway
		}
	}
	return nil
}

// Close stops the advisory subscription; unacknowledged messages are
// redelivered after ack_wait.
func (s *source) Close(context.Context) error {
	var err error
	s.closeOnce.Do(func() {
		if s.bounds.reached() {
			// Messages pulled past the stop go back at once, so that the
			// next run need not wait ack_wait for them: those held, and
			// those the pull brings until it is drained. They are given
			// back once the pull has stopped, else JetStream would
			// deliver them again to it.
			s.it.Drain()
			for {
				m, err := s.it.Next(jetstream.NextMaxWait(100 * time.Millisecond))
				if err != nil {
					break
				}
				s.bounds.held = append(s.bounds.held, m)
			}
		}
		s.it.Stop()
		if s.bounds.giveBack() {
			_ = s.n.nc.FlushTimeout(s.n.timeout) // the NAKs reach the server before the connection closes
		}
		err = s.sub.Unsubscribe()
	})
	return err
}

// refused marks as permanent the publish errors a message causes by itself
// (larger than the server's or the stream's limit), so the runtime
// dead-letters that row instead of retrying the batch as an outage.
func refused(err error) error {
	var apiErr *jetstream.APIError
	if errors.Is(err, natsgo.ErrMaxPayload) || errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum {
		return stream.Permanent(err)
	}
	return err
}

// Check verifies, for kisflow dry-run, that the stream exists (Start
// created it with params.create) and that its subjects cover the
// connector's subject. It reads the stream's configuration only.
func (n *NATS) Check(ctx context.Context, use config.ConnUse) error {
	if use.Source && !n.subject.Static() {
		return stream.Fatal(fmt.Errorf("a source needs a plain subject, not the template %q", n.cfg.Key))
	}
	cctx, cancel := context.WithTimeout(ctx, n.timeout)
	defer cancel()
	st, err := n.js.Stream(cctx, n.streamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return stream.Fatal(fmt.Errorf("stream %s does not exist (create it, or set params.create: \"true\")", n.streamName))
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", n.streamName, err)
	}
	subj := n.cfg.Key
	if !n.subject.Static() {
		subj = templateWildcard(subj)
	}
	subjects := st.CachedInfo().Config.Subjects
	if len(subjects) == 0 {
		subjects = []string{n.streamName} // a stream without subjects takes its own name
	}
	for _, s := range subjects {
		if subjectCovers(s, subj) {
			return nil
		}
	}
	return stream.Fatal(fmt.Errorf("stream %s takes subjects %s, not %s", n.streamName, strings.Join(subjects, ", "), subj))
}

// subjectCovers reports whether every subject that matches subj also
// matches the stream subject filter: "*" takes one token, ">" the rest.
func subjectCovers(filter, subj string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subj, ".")
	for i, tok := range f {
		switch {
		case tok == ">":
			return i < len(s)
		case i >= len(s):
			return false
		case tok == "*":
			if s[i] == ">" {
				return false
			}
		case tok != s[i]:
			return false
		}
	}
	return len(f) == len(s)
}
