// Package amqp provides the connector type rabbitmq (amqp091-go).
//
//   - The source consumes a queue with manual acknowledgement and a
//     prefetch limit; a message is acknowledged after the flow. When the
//     connection drops, the source reconnects and consumes again; the broker
//     requeues what was not acknowledged (at-least-once).
//   - The sink (and Save) publishes each row as JSON to an exchange with
//     publisher confirms: a write returns only once the broker took every
//     message. Each message gets a random message ID, which the source
//     passes on so exactly-once sinks recognise redeliveries.
//
// Its params are declared in Spec (`kisflow list rabbitmq`).
package amqp

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/driver/fields"
	"github.com/kisflow-go/kisflow/stream"
)

// Type is the connector type this package registers.
const Type = "rabbitmq"

// Install registers the rabbitmq connector type.
func Install(reg driver.Registrar) error { return reg.RegisterConnector(Spec, New) }

type params struct {
	Exchange string        `param:"exchange" doc:"the exchange the sink publishes to (absent: the default exchange, which routes to the queue named by the routing key)"`
	Prefetch int           `param:"prefetch" default:"256" min:"1" doc:"messages the source holds unacknowledged"`
	Create   bool          `param:"create" default:"false" doc:"declare the key's queue (durable) at start"`
	Timeout  time.Duration `param:"timeout" default:"10s" min:"1ms" doc:"dial and publisher confirms"`
	TLS      bool          `param:"tls" default:"false" doc:"connect with TLS (with amqps URLs)"`
}

// Spec declares the rabbitmq connector's addrs, key and params.
var Spec = func() *driver.Spec {
	s := driver.MustSpec[params](Type, "RabbitMQ (AMQP 0.9.1): a queue source acknowledging after the flow, a sink with publisher confirms")
	s.Addrs = "the AMQP URL (default amqp://guest:guest@127.0.0.1:5672/); several, comma-separated, are tried in order at every connect and reconnect: the nodes of a cluster"
	s.Key = "the queue for the source; the routing key template for the sink; required"
	return s
}()

// Broker is the driver. It is safe for concurrent use.
type Broker struct {
	cfg      *config.Conn
	url      string
	key      *fields.Template
	exchange string
	prefetch int
	create   bool
	timeout  time.Duration
	tls      bool

	mu  sync.Mutex
	pub *publisher
}

// New builds the driver from its config; it does not connect.
func New(cfg *config.Conn) (driver.Driver, error) {
	var p params
	if err := Spec.Decode(cfg, &p); err != nil {
		return nil, err
	}
	b := &Broker{cfg: cfg, url: cfg.Addrs, exchange: p.Exchange, create: p.Create, tls: p.TLS, prefetch: p.Prefetch, timeout: p.Timeout}
	if b.url == "" {
		b.url = "amqp://guest:guest@127.0.0.1:5672/"
	}
	if cfg.Key == "" {
		return nil, fmt.Errorf("rabbitmq connector %q: key (the queue, or the routing key) is required", cfg.CName)
	}
	var err error
	if b.key, err = fields.ParseTemplate(cfg.Key); err != nil {
		return nil, fmt.Errorf("rabbitmq connector %q: %w", cfg.CName, err)
	}
	return b, nil
}

func (b *Broker) dial() (*amqp.Connection, error) {
	cfg := amqp.Config{Dial: amqp.DefaultDial(b.timeout), Properties: amqp.Table{"connection_name": "kisflow-" + b.cfg.CName}}
	if b.tls {
		cfg.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	var errs []error
	for _, u := range strings.Split(b.url, ",") {
		conn, err := amqp.DialConfig(strings.TrimSpace(u), cfg)
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
	}
	// A URL that does not parse is quoted whole in the error.
	err := b.cfg.Redactor().Error(fmt.Errorf("rabbitmq connector %q: %w", b.cfg.CName, errors.Join(errs...)))
	if errors.Is(err, amqp.ErrCredentials) || errors.Is(err, amqp.ErrSASL) || errors.Is(err, amqp.ErrVhost) {
		// Refused credentials or virtual host: no retry can mend them.
		return nil, stream.Fatal(err)
	}
	return nil, err
}

// Start checks the broker answers and, with create, declares the queue.
func (b *Broker) Start(ctx context.Context) error {
	conn, err := b.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	if b.create && b.key.Static() {
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("rabbitmq connector %q: %w", b.cfg.CName, err)
		}
		defer ch.Close()
		if _, err := ch.QueueDeclare(b.cfg.Key, true, false, false, false, nil); err != nil {
			return fmt.Errorf("rabbitmq connector %q: declare queue %s: %w", b.cfg.CName, b.cfg.Key, err)
		}
	}
	return nil
}

// Close closes the publishing connection.
func (b *Broker) Close(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pub != nil {
		b.pub.conn.Close()
		b.pub = nil
	}
	return nil
}

// publisher is a connection and confirming channel for the sink.
type publisher struct {
	conn *amqp.Connection
	ch   *amqp.Channel
}

func (b *Broker) publisherLocked() (*publisher, error) {
	if b.pub != nil && !b.pub.conn.IsClosed() && !b.pub.ch.IsClosed() {
		return b.pub, nil
	}
	conn, err := b.dial()
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Confirm(false)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("rabbitmq connector %q: confirming channel: %w", b.cfg.CName, err)
	}
	b.pub = &publisher{conn: conn, ch: ch}
	return b.pub, nil
}

// Write publishes rows and waits for the broker's confirmation of each.
// A lost connection is reopened on the next write.
func (b *Broker) Write(ctx context.Context, rows []any) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	pub, err := b.publisherLocked()
	if err != nil {
		return err
	}
	var hdrs amqp.Table
	stream.InjectTrace(ctx, func(key, value string) {
		if hdrs == nil {
			hdrs = amqp.Table{}
		}
		hdrs[key] = value
	})
	confirms := make([]*amqp.DeferredConfirmation, 0, len(rows))
	for i, row := range rows {
		_, key, body, err := fields.Encode(row, b.key)
		if err != nil {
			return stream.Permanent(fmt.Errorf("rabbitmq connector %q: row %d: %w", b.cfg.CName, i, err))
		}
		c, err := pub.ch.PublishWithDeferredConfirmWithContext(ctx, b.exchange, key, false, false, amqp.Publishing{
			ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: body, MessageId: newID(), Headers: hdrs,
		})
		if err != nil {
			return fmt.Errorf("rabbitmq connector %q: publish: %w", b.cfg.CName, err)
		}
		confirms = append(confirms, c)
	}
	wctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	for _, c := range confirms {
		ok, err := c.WaitContext(wctx)
		if err != nil {
			return fmt.Errorf("rabbitmq connector %q: no confirmation: %w", b.cfg.CName, err)
		}
		if !ok {
			return fmt.Errorf("rabbitmq connector %q: the broker refused a message (nack)", b.cfg.CName)
		}
	}
	return nil
}

// newID is a message's ID: kept when the broker redelivers the message,
// which lets an exactly-once sink recognise the redelivery.
func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// OpenSource starts consuming the queue.
func (b *Broker) OpenSource(ctx context.Context, opts stream.SourceOptions) (stream.Source, error) {
	if !b.key.Static() {
		return nil, fmt.Errorf("rabbitmq connector %q: a source needs a plain queue name, not the template %q", b.cfg.CName, b.cfg.Key)
	}
	s := &source{b: b, queue: b.cfg.Key}
	if err := s.connect(); err != nil {
		return nil, err
	}
	return s, nil
}

type source struct {
	b     *Broker
	queue string
	// mu guards the connection fields: Read reconnects while the
	// committer acknowledges.
	mu         sync.Mutex
	conn       *amqp.Connection
	ch         *amqp.Channel
	deliveries <-chan amqp.Delivery
	generation int
}

// handle ties a delivery tag to the channel it came on.
type handle struct {
	tag        uint64
	generation int
}

func (s *source) connect() error {
	conn, err := s.b.dial()
	if err != nil {
		return err
	}
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Qos(s.b.prefetch, 0, false)
	}
	var d <-chan amqp.Delivery
	if err == nil {
		d, err = ch.Consume(s.queue, "", false, false, false, false, nil)
	}
	if err != nil {
		conn.Close()
		return fmt.Errorf("rabbitmq source %s: %w", s.queue, err)
	}
	s.mu.Lock()
	s.conn, s.ch, s.deliveries = conn, ch, d
	s.generation++
	s.mu.Unlock()
	return nil
}

func (s *source) current() (<-chan amqp.Delivery, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deliveries, s.generation
}

// Read waits for the first delivery, then takes what is buffered, up to
// max. A closed channel (a lost connection) is reopened.
func (s *source) Read(ctx context.Context, max int) ([]*stream.Message, error) {
	var out []*stream.Message
	deliveries, gen := s.current()
	for len(out) == 0 {
		select {
		case d, ok := <-deliveries:
			if !ok {
				if err := s.reconnect(ctx); err != nil {
					return nil, err
				}
				deliveries, gen = s.current()
				continue
			}
			out = append(out, message(d, gen))
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	for len(out) < max {
		select {
		case d, ok := <-deliveries:
			if !ok {
				return out, nil
			}
			out = append(out, message(d, gen))
		default:
			return out, nil
		}
	}
	return out, nil
}

func (s *source) reconnect(ctx context.Context) error {
	s.mu.Lock()
	_ = s.conn.Close() // already closed, or broken
	s.mu.Unlock()
	wait := 100 * time.Millisecond
	for {
		err := s.connect()
		if err == nil {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(ctx.Err(), err)
		case <-t.C:
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func message(d amqp.Delivery, generation int) *stream.Message {
	m := &stream.Message{Payload: d.Body, Handle: handle{d.DeliveryTag, generation}, ID: d.MessageId}
	if len(d.Headers) > 0 {
		m.Headers = make(map[string]string, len(d.Headers))
		for k, v := range d.Headers {
			m.Headers[k] = fmt.Sprint(v)
		}
	}
	return m
}

// Ack acknowledges, in one call, every delivery up to the last of msgs on
// the current channel. Deliveries from a channel that closed meanwhile were
// requeued by the broker and come again.
func (s *source) Ack(_ context.Context, msgs []*stream.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var last uint64
	for _, m := range msgs {
		if h, ok := m.Handle.(handle); ok && h.generation == s.generation && h.tag > last {
			last = h.tag
		}
	}
	if last == 0 {
		return nil
	}
	if err := s.ch.Ack(last, true); err != nil && !errors.Is(err, amqp.ErrClosed) {
		return fmt.Errorf("rabbitmq source %s: ack: %w", s.queue, err)
	}
	return nil
}

// Nack requeues deliveries that were not processed.
func (s *source) Nack(_ context.Context, msgs []*stream.Message, _ error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range msgs {
		if h, ok := m.Handle.(handle); ok && h.generation == s.generation {
			_ = s.ch.Nack(h.tag, false, true) // best effort: closing the channel requeues too
		}
	}
	return nil
}

// Close closes the consuming connection; unacknowledged deliveries go back
// to the queue.
func (s *source) Close(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil || s.conn.IsClosed() {
		return nil
	}
	return s.conn.Close()
}

// Check verifies, for kisflow dry-run, that the broker answers, that the
// exchange exists (when params.exchange names one) and that the queue
// exists: the source's queue, or the sink's when it publishes to the
// default exchange with a plain routing key. Passive declarations change
// nothing on the broker.
func (b *Broker) Check(_ context.Context, use config.ConnUse) error {
	if use.Source && !b.key.Static() {
		return stream.Fatal(fmt.Errorf("a source needs a plain queue name, not the template %q", b.cfg.Key))
	}
	conn, err := b.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	// A failed passive declaration closes its channel: one channel each.
	passive := func(declare func(ch *amqp.Channel) error) error {
		ch, err := conn.Channel()
		if err != nil {
			return err
		}
		defer ch.Close()
		return declare(ch)
	}
	notFound := func(err error) bool {
		var ae *amqp.Error
		return errors.As(err, &ae) && ae.Code == amqp.NotFound
	}
	if b.exchange != "" && (use.Sink || !use.Source) {
		err := passive(func(ch *amqp.Channel) error {
			return ch.ExchangeDeclarePassive(b.exchange, amqp.ExchangeDirect, true, false, false, false, nil)
		})
		if notFound(err) {
			return stream.Fatal(fmt.Errorf("exchange %s does not exist (declare it on the broker)", b.exchange))
		}
		if err != nil {
			return fmt.Errorf("exchange %s: %w", b.exchange, err)
		}
	}
	if !b.key.Static() || (b.exchange != "" && !use.Source) {
		return nil // a routing key, not a queue
	}
	err = passive(func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclarePassive(b.cfg.Key, true, false, false, false, nil)
		return err
	})
	if notFound(err) {
		return stream.Fatal(fmt.Errorf("queue %s does not exist (create it, or set params.create: \"true\")", b.cfg.Key))
	}
	if err != nil {
		return fmt.Errorf("queue %s: %w", b.cfg.Key, err)
	}
	return nil
}
