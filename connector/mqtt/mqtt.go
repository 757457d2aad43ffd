// Package mqtt provides the connector type mqtt (Eclipse Paho), at QoS 1.
//
//   - The source subscribes to a topic filter with a persistent session
//     (clean session off, a stable client ID per flow) and acknowledges a
//     message (PUBACK) only after the flow; the broker redelivers what was
//     not acknowledged when the client comes back.
//   - The sink (and Save) publishes each row as JSON at QoS 1 and waits for
//     the broker's acknowledgement.
//
// Its params are declared in Spec (`kisflow list mqtt`).
package mqtt

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/driver/fields"
	"github.com/kisflow-go/kisflow/stream"
)

// Type is the connector type this package registers.
const Type = "mqtt"

// Install registers the mqtt connector type.
func Install(reg driver.Registrar) error { return reg.RegisterConnector(Spec, New) }

type params struct {
	ClientID string        `param:"client_id" doc:"the client ID (else kisflow-FLOW for the source): the broker keeps the persistent session under it"`
	User     string        `param:"user" doc:"the user name (with password)"`
	Password string        `param:"password" secret:"true" doc:"the user's password"`
	Timeout  time.Duration `param:"timeout" default:"10s" min:"1ms" doc:"connect and publish"`
	Buffer   int           `param:"buffer" default:"1024" min:"1" doc:"messages held before the flow reads them"`
	TLS      bool          `param:"tls" default:"false" doc:"connect with TLS (with ssl:// URLs)"`
}

// Spec declares the mqtt connector's addrs, key and params.
var Spec = func() *driver.Spec {
	s := driver.MustSpec[params](Type, "MQTT at QoS 1: a persistent-session source acknowledging after the flow, a sink waiting for the broker's acknowledgement")
	s.Addrs = "the broker URL (default tcp://127.0.0.1:1883); several, comma-separated, are tried in order on every connect and reconnect"
	s.Key = "the topic filter for the source; the topic template for the sink; required"
	s.Unidentified = true // QoS 1 messages carry no ID a redelivery keeps
	return s
}()

// Broker is the driver. It is safe for concurrent use.
type Broker struct {
	cfg      *config.Conn
	url      string
	topic    *fields.Template
	clientID string
	timeout  time.Duration
	buffer   int
	user     string
	password string
	tls      bool

	mu  sync.Mutex
	pub paho.Client
}

// New builds the driver from its config; it does not connect.
func New(cfg *config.Conn) (driver.Driver, error) {
	var p params
	if err := Spec.Decode(cfg, &p); err != nil {
		return nil, err
	}
	b := &Broker{cfg: cfg, url: cfg.Addrs, clientID: p.ClientID, timeout: p.Timeout, buffer: p.Buffer,
		user: p.User, password: p.Password, tls: p.TLS}
	if b.url == "" {
		b.url = "tcp://127.0.0.1:1883"
	}
	if cfg.Key == "" {
		return nil, fmt.Errorf("mqtt connector %q: key (the topic) is required", cfg.CName)
	}
	var err error
	if b.topic, err = fields.ParseTemplate(cfg.Key); err != nil {
		return nil, fmt.Errorf("mqtt connector %q: %w", cfg.CName, err)
	}
	return b, nil
}

func (b *Broker) options(clientID string, persistent bool) *paho.ClientOptions {
	o := paho.NewClientOptions()
	for _, u := range strings.Split(b.url, ",") {
		o.AddBroker(strings.TrimSpace(u))
	}
	o.SetClientID(clientID).
		SetConnectTimeout(b.timeout).SetWriteTimeout(b.timeout).
		SetAutoReconnect(true).SetConnectRetry(true).SetMaxReconnectInterval(5 * time.Second).
		SetCleanSession(!persistent).SetOrderMatters(false)
	if b.user != "" {
		o.SetUsername(b.user).SetPassword(b.password)
	}
	if b.tls {
		o.SetTLSConfig(&tls.Config{MinVersion: tls.VersionTLS12})
	}
	return o
}

func (b *Broker) connect(c paho.Client) error {
	tok := c.Connect()
	if !tok.WaitTimeout(b.timeout) {
		c.Disconnect(0)
		return fmt.Errorf("mqtt connector %q: connect to %s: timed out", b.cfg.CName, config.Redact(b.url))
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("mqtt connector %q: connect to %s: %w", b.cfg.CName, config.Redact(b.url), err)
	}
	return nil
}

// Start connects the publishing client.
func (b *Broker) Start(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.connectPublisher()
}

// connectPublisher makes a new publishing client; b.mu is held. It does
// not reconnect by itself: Paho's reconnect re-sends stored publishes
// while the old connection's writer may still be sending them (a data
// race in Paho, eclipse-paho/paho.mqtt.golang#703). A write that loses
// its connection fails instead (the runtime retries it) and the next
// write connects afresh.
func (b *Broker) connectPublisher() error {
	o := b.options(fmt.Sprintf("kisflow-pub-%s-%d", b.cfg.CName, time.Now().UnixNano()), false).
		SetAutoReconnect(false).SetConnectRetry(false)
	c := paho.NewClient(o)
	if err := b.connect(c); err != nil {
		return err
	}
	if b.pub != nil {
		b.pub.Disconnect(0)
	}
	b.pub = c
	return nil
}

// publisher returns a connected publishing client, connecting a new one
// when the last lost its connection.
func (b *Broker) publisher() (paho.Client, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pub == nil {
		return nil, fmt.Errorf("mqtt connector %q is not started", b.cfg.CName)
	}
	if !b.pub.IsConnectionOpen() {
		if err := b.connectPublisher(); err != nil {
			return nil, err
		}
	}
	return b.pub, nil
}

// Close disconnects the publishing client.
func (b *Broker) Close(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pub != nil {
		b.pub.Disconnect(250)
		b.pub = nil
	}
	return nil
}

// Write publishes rows at QoS 1 and waits for every acknowledgement.
func (b *Broker) Write(ctx context.Context, rows []any) error {
	pub, err := b.publisher()
	if err != nil {
		return err
	}
	type message struct {
		topic string
		data  []byte
	}
	msgs := make([]message, len(rows))
	for i, row := range rows {
		_, topic, data, err := fields.Encode(row, b.topic)
		if err != nil {
			return stream.Permanent(fmt.Errorf("mqtt connector %q: row %d: %w", b.cfg.CName, i, err))
		}
		msgs[i] = message{topic, data}
	}
	deadline := time.Now().Add(b.timeout)
	// Publish blocks (up to the write timeout) when the connection died
	// under it: hand the messages over in a goroutine so that ctx and the
	// deadline still end Write.
	published := make(chan []paho.Token, 1)
	go func() {
		toks := make([]paho.Token, len(msgs))
		for i, m := range msgs {
			toks[i] = pub.Publish(m.topic, 1, false, m.data)
		}
		published <- toks
	}()
	var toks []paho.Token
	select {
	case toks = <-published:
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(b.timeout):
		return fmt.Errorf("mqtt connector %q: publish: not sent within %v", b.cfg.CName, b.timeout)
	}
	for _, tok := range toks {
		select {
		case <-tok.Done():
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Until(deadline)):
			return fmt.Errorf("mqtt connector %q: publish: no acknowledgement within %v", b.cfg.CName, b.timeout)
		}
		if err := tok.Error(); err != nil {
			return fmt.Errorf("mqtt connector %q: publish: %w", b.cfg.CName, err)
		}
	}
	return nil
}

// OpenSource connects with a persistent session and subscribes at QoS 1.
func (b *Broker) OpenSource(ctx context.Context, opts stream.SourceOptions) (stream.Source, error) {
	if !b.topic.Static() {
		return nil, fmt.Errorf("mqtt connector %q: a source needs a topic filter, not the template %q", b.cfg.CName, b.cfg.Key)
	}
	id := b.clientID
	if id == "" {
		id = "kisflow-" + opts.Name
	}
	s := &source{b: b, msgs: make(chan paho.Message, b.buffer), closed: make(chan struct{})}
	subscribed := make(chan error, 1)
	// Handlers run one at a time, in arrival order: order per topic holds.
	o := b.options(id, true).SetAutoAckDisabled(true).SetOrderMatters(true)
	// Subscribing in OnConnect renews the subscription after a reconnect;
	// the persistent session delivers what arrived meanwhile.
	o.SetOnConnectHandler(func(c paho.Client) {
		tok := c.Subscribe(b.cfg.Key, 1, s.deliver)
		go func() {
			tok.WaitTimeout(b.timeout)
			select {
			case subscribed <- tok.Error():
			default: // a reconnect: nobody waits
			}
		}()
	})
	o.SetDefaultPublishHandler(s.deliver) // messages of the session before the subscription is renewed
	s.c = paho.NewClient(o)
	if err := b.connect(s.c); err != nil {
		return nil, err
	}
	// Messages published before the broker acknowledged the subscription
	// would not reach this session: wait for it.
	select {
	case err := <-subscribed:
		if err != nil {
			s.c.Disconnect(0)
			return nil, fmt.Errorf("mqtt connector %q: subscribe %s: %w", b.cfg.CName, b.cfg.Key, err)
		}
	case <-time.After(b.timeout):
		s.c.Disconnect(0)
		return nil, fmt.Errorf("mqtt connector %q: subscribe %s: timed out", b.cfg.CName, b.cfg.Key)
	case <-ctx.Done():
		s.c.Disconnect(0)
		return nil, ctx.Err()
	}
	return s, nil
}

type source struct {
	b         *Broker
	c         paho.Client
	msgs      chan paho.Message
	closed    chan struct{}
	closeOnce sync.Once
	lastAck   atomic.Int64 // unix nanoseconds of the last Ack
}

func (s *source) deliver(_ paho.Client, m paho.Message) {
	select {
	case s.msgs <- m:
	case <-s.closed:
		// Not acknowledged: the broker redelivers it to the session.
	}
}

// Read waits for the first message, then takes what is buffered, up to max.
func (s *source) Read(ctx context.Context, max int) ([]*stream.Message, error) {
	var out []*stream.Message
	select {
	case m := <-s.msgs:
		out = append(out, message(m))
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.closed:
		return nil, errors.New("mqtt source: closed")
	}
	for len(out) < max {
		select {
		case m := <-s.msgs:
			out = append(out, message(m))
		default:
			return out, nil
		}
	}
	return out, nil
}

func message(m paho.Message) *stream.Message {
	return &stream.Message{Payload: m.Payload(), Handle: m, Key: m.Topic()}
}

// Ack sends the PUBACKs.
func (s *source) Ack(_ context.Context, msgs []*stream.Message) error {
	for _, m := range msgs {
		if pm, ok := m.Handle.(paho.Message); ok {
			pm.Ack()
		}
	}
	s.lastAck.Store(time.Now().UnixNano())
	return nil
}

// ackGrace is how long Close lets PUBACKs queued by Ack leave: Paho sends
// them asynchronously and signals no completion.
const ackGrace = 500 * time.Millisecond

// Close disconnects; the session keeps what was not acknowledged. Paho
// queues acknowledgements without a completion signal, so Close first lets
// ackGrace pass since the last Ack.
func (s *source) Close(context.Context) error {
	s.closeOnce.Do(func() {
		close(s.closed)
		if since := time.Since(time.Unix(0, s.lastAck.Load())); since < ackGrace {
			time.Sleep(ackGrace - since)
		}
		s.c.Disconnect(1000)
	})
	return nil
}

// Check verifies, for kisflow dry-run, that the publishing client Start
// connected is still connected: the broker took the address and the
// credentials.
func (b *Broker) Check(context.Context, config.ConnUse) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pub == nil || !b.pub.IsConnectionOpen() {
		return fmt.Errorf("lost the connection to %s", config.Redact(b.url))
	}
	return nil
}
