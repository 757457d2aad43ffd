package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	neturl "net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultWeight is a provider's weight when none is given (dubbo's).
const DefaultWeight = 100

// DefaultBucket is the NATS key-value bucket of the registry.
const DefaultBucket = "kisflow_remote"

// DefaultTTL is how long a provider's registration lives without a
// heartbeat: a killed provider is dropped by callers this long after its
// last one. Providers refresh it every third of it.
const DefaultTTL = 5 * time.Second

// Provider is one process serving functions, as the registry lists it.
type Provider struct {
	ID      string   `json:"id"`
	Service string   `json:"service"`
	Addr    string   `json:"addr"` // host:port of its gRPC listener
	Version string   `json:"version,omitempty"`
	Group   string   `json:"group,omitempty"`
	Weight  int      `json:"weight,omitempty"`
	Funcs   []string `json:"funcs,omitempty"` // empty: unknown (static, DNS): any
	// TTL is how long the registration lives without a refresh.
	TTL time.Duration `json:"ttl,omitempty"`
}

// ttl is p's TTL, DefaultTTL when it gives none.
func (p Provider) ttl() time.Duration {
	if p.TTL <= 0 {
		return DefaultTTL
	}
	return p.TTL
}

func (p Provider) weight() int {
	if p.Weight <= 0 {
		return DefaultWeight
	}
	return p.Weight
}

// serves reports whether p serves fname (a provider whose functions are
// unknown is assumed to).
func (p Provider) serves(fname string) bool {
	return len(p.Funcs) == 0 || slices.Contains(p.Funcs, fname)
}

// Directory is the live list of a service's providers.
type Directory interface {
	// Providers returns the providers known now. The slice is the
	// caller's.
	Providers() []Provider
	// Close stops following the registry.
	Close() error
}

// validName is what a service name may hold: it is part of a NATS key.
var validName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// CheckService returns an error unless name can name a service.
func CheckService(name string) error {
	if !validName.MatchString(name) {
		return fmt.Errorf("service name %q: use letters, digits, - and _ only", name)
	}
	return nil
}

// WatchOption configures WatchNATS and WatchDNS.
type WatchOption func(*watchOptions)

type watchOptions struct {
	log *slog.Logger
}

// WithLogger makes a directory log through l (the engine's logger, in the
// command's format) instead of slog.Default.
func WithLogger(l *slog.Logger) WatchOption {
	return func(o *watchOptions) {
		if l != nil {
			o.log = l
		}
	}
}

func watchConfig(opts []WatchOption) watchOptions {
	o := watchOptions{log: slog.Default()}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// natsKey is a provider's key in the bucket.
func natsKey(service, id string) string { return service + "." + id }

// DefaultNATSPort is the port of a NATS URL that gives none, as nats.go
// reads it.
const DefaultNATSPort = natsgo.DefaultPort

// NATSURL checks a NATS registry's address as nats.go takes it: URLs
// separated by commas, each [nats://|tls://]host[:port] (user info
// allowed), and returns it with the scheme and the port of each URL
// written out: a URL without a port has DefaultNATSPort (4222), as nats.go
// connects to it. A URL that nats.go could never connect to (another
// scheme, no host, a port that is not 1 to 65535, a path) is an error.
func NATSURL(servers string) (string, error) {
	var out []string
	for _, s := range strings.Split(servers, ",") {
		raw := strings.TrimSpace(s)
		if raw == "" {
			continue
		}
		s = raw
		if !strings.Contains(s, "://") {
			s = "nats://" + s
		}
		u, err := neturl.Parse(s)
		switch {
		case err != nil, u.Scheme != "nats" && u.Scheme != "tls", u.Hostname() == "", u.Path != "" && u.Path != "/", u.RawQuery != "", u.Opaque != "":
			return "", fmt.Errorf("NATS server %q: want nats://host[:port] (port %d when not given)", raw, DefaultNATSPort)
		}
		if port := u.Port(); port == "" {
			u.Host = net.JoinHostPort(u.Hostname(), strconv.Itoa(DefaultNATSPort))
		} else if !validPort(port) {
			return "", fmt.Errorf("NATS server %q: port %q is not a port number (1 to 65535)", raw, port)
		}
		u.Path = ""
		out = append(out, u.String())
	}
	if len(out) == 0 {
		return "", fmt.Errorf("no NATS server given: want nats://host[:port]")
	}
	return strings.Join(out, ","), nil
}

// openBucket connects to the NATS server at url and opens (or creates)
// the registry's key-value bucket. opts are more connection options.
func openBucket(ctx context.Context, url, bucket string, opts ...natsgo.Option) (*natsgo.Conn, jetstream.KeyValue, error) {
	nc, err := natsgo.Connect(url, append([]natsgo.Option{natsgo.Name("kisflow-remote"), natsgo.MaxReconnects(-1), natsgo.RetryOnFailedConnect(false)}, opts...)...)
	if err != nil {
		return nil, nil, fmt.Errorf("registry %s: %w (is NATS with JetStream running there?)", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("registry %s: %w", url, err)
	}
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		// Storage is cleaned of registrations not refreshed for a minute;
		// callers drop a provider after its own TTL.
		kv, err = js.CreateKeyValue(ctx, bucketConfig(bucket))
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, bucket)
		}
	}
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("registry %s: bucket %s: %w (is JetStream enabled?)", url, bucket, err)
	}
	return nc, kv, nil
}

// bucketConfig is the registry bucket serve creates when there is none.
func bucketConfig(bucket string) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: bucket, History: 1, TTL: time.Minute, Description: "KisFlow remote function providers"}
}

// natsDirectory follows a service's registrations in the bucket.
type natsDirectory struct {
	nc      *natsgo.Conn
	kv      jetstream.KeyValue
	service string
	w       jetstream.KeyWatcher // the first watch; follow owns the later ones
	cancel  context.CancelFunc
	done    chan struct{}
	version string
	group   string
	log     *slog.Logger

	mu    sync.Mutex
	known map[string]seen // key -> registration
	// up is whether the registry was reachable at the last look; downAt
	// is when it was last seen unreachable and resumed when it became
	// reachable again: the outage does not count in the age of a
	// registration not refreshed since (see stale).
	up      bool
	downAt  time.Time
	resumed time.Time
}

// reconnectGrace bounds the time a live provider needs, once the registry
// is back, to reconnect (nats.go waits 2s between attempts) and refresh
// its registration (at once on reconnecting).
const reconnectGrace = natsgo.DefaultReconnectWait + time.Second

type seen struct {
	p    Provider
	last time.Time
	// until, when set, is when the registration is dropped unless written
	// again: one missing from the bucket after an outage that may have
	// removed live ones (see reconcile).
	until time.Time
}

// WatchNATS follows the providers of service (of version and group, when
// not "") registered in bucket of the NATS server at url: a registration
// that appears is listed within the watch's latency, one that is deleted
// (a drained provider) is dropped at once, and one that is not refreshed
// within its TTL (a killed provider) is dropped then. While the registry is
// unreachable the last known list is kept as it is (as dubbo's registry
// directory does): no refresh could arrive, so none is taken as missed.
// Once it is back, the known providers are reconciled with the bucket: one
// no longer in it is dropped (unless the bucket itself is new: NATS lost
// its store), and one not refreshed since the outage began counts its TTL
// on from its last refresh as the bucket records it, the outage not
// counted, and is kept at least min(TTL, 3s) after the registry's return,
// the time a live provider takes to reconnect and refresh.
func WatchNATS(ctx context.Context, url, bucket, service, version, group string, opts ...WatchOption) (Directory, error) {
	if err := CheckService(service); err != nil {
		return nil, err
	}
	nc, kv, err := openBucket(ctx, url, bucket)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.Background())
	d := &natsDirectory{nc: nc, kv: kv, service: service, cancel: cancel, done: make(chan struct{}), version: version, group: group, log: watchConfig(opts).log, known: map[string]seen{}, up: true}
	if d.w, err = d.watch(wctx); err != nil {
		cancel()
		nc.Close()
		return nil, fmt.Errorf("registry %s: watch %s: %w", url, service, err)
	}
	// The registrations already there come first, then a nil marker: wait
	// for it so that the first call sees them.
	initial := make(chan struct{})
	go d.follow(wctx, initial)
	select {
	case <-initial:
	case <-ctx.Done():
		d.Close()
		return nil, ctx.Err()
	case <-time.After(5 * time.Second):
		// A slow server: go on, the watch fills the list.
	}
	return d, nil
}

// watch starts a watch of the service's registrations: the current ones
// come first, then a nil marker, then the updates.
func (d *natsDirectory) watch(ctx context.Context) (jetstream.KeyWatcher, error) {
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return d.kv.Watch(wctx, d.service+".*")
}

// follow applies the watch's entries and expires the registrations not
// refreshed. The watch's consumer lives in the NATS server: one that
// restarts loses it, and the client would recreate it only after missing
// its heartbeats for seconds, so follow watches anew (listing the current
// registrations again, the known ones kept meanwhile) as soon as the
// connection is back, and whenever the watch ends.
func (d *natsDirectory) follow(ctx context.Context, initial chan struct{}) {
	defer close(d.done)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	first := true
	w := d.w
	updates := w.Updates()
	reconnects := d.nc.Stats().Reconnects
	// listed collects the keys of a new watch's initial listing, which
	// the known providers are reconciled with (nil: no watch anew).
	var listed map[string]bool
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			d.expire(time.Now())
			n := d.nc.Stats().Reconnects
			if (n == reconnects && w != nil) || d.nc.Status() != natsgo.CONNECTED {
				continue
			}
			nw, err := d.watch(ctx)
			if err != nil {
				// JetStream may need a moment after a restart: next tick.
				d.log.Debug("remote: watching the registry again failed; retrying", "service", d.service, "err", err)
				continue
			}
			dropWatch(w, d.done)
			w, updates, reconnects = nw, nw.Updates(), n
			listed = map[string]bool{}
		case e, ok := <-updates:
			if !ok {
				// The watch ended (its subscription closed): watch anew at
				// the next tick, keeping the known providers meanwhile.
				w, updates = nil, nil
				continue
			}
			if e == nil {
				if first {
					first = false
					close(initial)
				}
				if listed != nil {
					d.reconcile(ctx, listed)
					listed = nil
				}
				continue
			}
			if listed != nil {
				listed[e.Key()] = true
			}
			d.apply(e)
		}
	}
}

// dropWatch stops a watch replaced by a new one, in the background: its
// consumer may be gone with a restarted server, and asking to delete it
// waits for a timeout. Its pending entries are discarded so that its
// delivery never blocks, until the watch ends or the directory closes.
func dropWatch(w jetstream.KeyWatcher, closed <-chan struct{}) {
	if w == nil {
		return
	}
	go func() {
		_ = w.Stop()
		for {
			select {
			case _, ok := <-w.Updates():
				if !ok {
					return
				}
			case <-closed:
				return
			}
		}
	}()
}

// reconcile drops the known providers missing from a new watch's initial
// listing of the bucket: deleted (drained) or removed by storage while the
// directory did not follow the bucket. A live provider writes its
// registration at least every third of the bucket's storage TTL, so
// storage removes it only when the registry could not take its writes for
// long: after an outage of half that TTL or more, or when the bucket was
// created since the outage began (NATS lost its store), a missing provider
// may be live and registering again: it is kept min(TTL, reconnectGrace)
// after the return, then dropped unless it registered meanwhile.
func (d *natsDirectory) reconcile(ctx context.Context, listed map[string]bool) {
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	st, err := d.kv.Status(sctx)
	if err != nil {
		return // the next watch anew reconciles
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	uncertain := false
	if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok && !d.downAt.IsZero() && d.resumed.After(d.downAt) {
		outage := d.resumed.Sub(d.downAt)
		uncertain = bs.StreamInfo().Created.After(d.downAt) || st.TTL() > 0 && outage >= st.TTL()/2
	}
	for k, s := range d.known {
		switch {
		case listed[k]:
		case uncertain:
			if s.until.IsZero() {
				s.until = d.resumed.Add(min(s.p.ttl(), reconnectGrace))
				d.known[k] = s
			}
		default:
			d.log.Info("remote: provider no longer registered; dropped", "service", d.service, "key", k)
			delete(d.known, k)
		}
	}
}

func (d *natsDirectory) apply(e jetstream.KeyValueEntry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(d.known, e.Key())
		return
	}
	var p Provider
	if err := json.Unmarshal(e.Value(), &p); err != nil || p.Addr == "" {
		d.log.Warn("remote: ignoring a registration that is not a provider", "key", e.Key(), "err", err)
		return
	}
	// A registration read at start may be older than now: its age counts.
	last := time.Now()
	if c := e.Created(); !c.IsZero() && c.Before(last) {
		last = c
	}
	d.known[e.Key()] = seen{p: p, last: last}
}

// expire drops the registrations not refreshed within their TTL, only
// while the registry is reachable (see WatchNATS).
func (d *natsDirectory) expire(now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.reachable(now) {
		return
	}
	for k, s := range d.known {
		if d.stale(s, now) {
			delete(d.known, k)
		}
	}
}

// reachable notes whether the registry is reachable now and when it came
// back. d.mu is held.
func (d *natsDirectory) reachable(now time.Time) bool {
	up := d.nc.Status() == natsgo.CONNECTED
	if up && !d.up {
		d.resumed = now
		d.log.Info("remote: registry reachable again; the providers kept meanwhile count their TTL on from their last refresh, the outage not counted")
	} else if !up && d.up {
		d.downAt = now
		d.log.Warn("remote: registry unreachable; keeping the last known providers until it is back", "providers", len(d.known))
	}
	d.up = up
	return up
}

// stale reports whether registration s was not refreshed within its TTL.
// The last outage of the registry does not count for a registration not
// refreshed since it began (no refresh could arrive), and such a
// registration is kept at least min(TTL, reconnectGrace) after the
// registry's return, for a live provider to reconnect and refresh. d.mu
// is held.
func (d *natsDirectory) stale(s seen, now time.Time) bool {
	if !s.until.IsZero() {
		return now.After(s.until)
	}
	ttl := s.p.ttl()
	from := s.last
	if !d.downAt.IsZero() && d.resumed.After(d.downAt) && from.Before(d.downAt) {
		from = from.Add(d.resumed.Sub(d.downAt))
		if floor := d.resumed.Add(min(ttl, reconnectGrace) - ttl); floor.After(from) {
			from = floor
		}
	}
	return now.Sub(from) > ttl
}

// Providers lists the registrations of the version and group asked for
// that are fresh: one older than its TTL is left out even before the next
// expiry (a caller started after a provider was killed never calls it),
// unless the registry is unreachable.
func (d *natsDirectory) Providers() []Provider {
	return d.list(true)
}

// list returns the fresh registrations, only those of the version and
// group asked for when filtered.
func (d *natsDirectory) list(filtered bool) []Provider {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	up := d.reachable(now)
	// One address is one provider: a provider killed and restarted on its
	// address registers again under a new id while the old registration
	// waits for its TTL; the newest one is listed.
	byAddr := make(map[string]seen, len(d.known))
	for _, s := range d.known {
		if up && d.stale(s, now) {
			continue
		}
		if o, ok := byAddr[s.p.Addr]; !ok || s.last.After(o.last) || s.last.Equal(o.last) && s.p.ID > o.p.ID {
			byAddr[s.p.Addr] = s
		}
	}
	out := make([]Provider, 0, len(byAddr))
	for _, s := range byAddr {
		if !filtered || (d.version == "" || s.p.Version == d.version) && (d.group == "" || s.p.Group == d.group) {
			out = append(out, s.p)
		}
	}
	slices.SortFunc(out, func(a, b Provider) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// All lists every fresh registration of the service, whatever its version
// and group (Lister).
func (d *natsDirectory) All() []Provider { return d.list(false) }

// Filter returns the version and group d asks for (Lister).
func (d *natsDirectory) Filter() (version, group string) { return d.version, d.group }

// Lister is an optional Directory capability: a directory that filters a
// service's providers by version and group lists them all too, so that an
// error can say which exist.
type Lister interface {
	// All returns every live provider of the service.
	All() []Provider
	// Filter returns the version and group asked for ("" for any).
	Filter() (version, group string)
}

// Close stops following the registry. It does not ask the server to
// delete the watch's consumer (which waits for a timeout when the server
// is down or restarted and lost it): closing the connection ends the
// subscription, and the server drops the idle ephemeral consumer itself.
func (d *natsDirectory) Close() error {
	d.cancel()
	<-d.done
	d.nc.Close()
	return nil
}

// staticDirectory is a fixed list of providers.
type staticDirectory []Provider

// Static is a directory of a fixed list of addresses, "host:port" each,
// optionally "host:port;weight" (default weight DefaultWeight).
func Static(addrs []string) (Directory, error) {
	var d staticDirectory
	var errs []error
	for _, a := range addrs {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		w := 0
		if host, ws, ok := strings.Cut(a, ";"); ok {
			n, err := strconv.Atoi(ws)
			if err != nil || n < 1 {
				errs = append(errs, fmt.Errorf("static provider %q: the weight after ';' must be a whole number of at least 1", a))
				continue
			}
			a, w = host, n
		}
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("static provider %q: want host:port (a port is required)", a))
			continue
		} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			errs = append(errs, fmt.Errorf("static provider %q: port %q is not a port number (1 to 65535)", a, port))
			continue
		}
		d = append(d, Provider{ID: a, Addr: a, Weight: w})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(d) == 0 {
		return nil, errors.New("static registry: addrs lists no provider (give host:port, comma-separated)")
	}
	return d, nil
}

func (d staticDirectory) Providers() []Provider { return slices.Clone(d) }
func (staticDirectory) Close() error            { return nil }

// dnsDirectory follows the SRV records of a name.
type dnsDirectory struct {
	name   string
	lookup func(ctx context.Context, name string) ([]*net.SRV, error)
	cancel context.CancelFunc
	done   chan struct{}
	log    *slog.Logger

	mu   sync.Mutex
	list []Provider
}

// WatchDNS follows the SRV records of name (such as
// _grpc._tcp.pricing.default.svc.cluster.local, which a Kubernetes headless
// service with a port named grpc publishes), looked up every refresh: each
// target:port is a provider, weighted by the record's weight. A failed
// lookup keeps the last list.
func WatchDNS(ctx context.Context, name string, refresh time.Duration, opts ...WatchOption) (Directory, error) {
	return watchDNS(ctx, name, refresh, watchConfig(opts).log, func(ctx context.Context, name string) ([]*net.SRV, error) {
		_, srvs, err := net.DefaultResolver.LookupSRV(ctx, "", "", name)
		return srvs, err
	})
}

func watchDNS(ctx context.Context, name string, refresh time.Duration, log *slog.Logger, lookup func(context.Context, string) ([]*net.SRV, error)) (Directory, error) {
	d := &dnsDirectory{name: name, lookup: lookup, done: make(chan struct{}), log: log}
	if err := d.resolve(ctx); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go func() {
		defer close(d.done)
		t := time.NewTicker(refresh)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
				lctx, c := context.WithTimeout(wctx, refresh)
				if err := d.resolve(lctx); err != nil {
					d.log.Warn("remote: DNS lookup failed; keeping the last providers", "name", name, "err", err)
				}
				c()
			}
		}
	}()
	return d, nil
}

func (d *dnsDirectory) resolve(ctx context.Context) error {
	srvs, err := d.lookup(ctx, d.name)
	if err != nil {
		return fmt.Errorf("dns registry: SRV %s: %w", d.name, err)
	}
	list := make([]Provider, 0, len(srvs))
	for _, s := range srvs {
		addr := net.JoinHostPort(strings.TrimSuffix(s.Target, "."), strconv.Itoa(int(s.Port)))
		list = append(list, Provider{ID: addr, Addr: addr, Weight: int(s.Weight)})
	}
	d.mu.Lock()
	d.list = list
	d.mu.Unlock()
	return nil
}

func (d *dnsDirectory) Providers() []Provider {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.list)
}

func (d *dnsDirectory) Close() error {
	d.cancel()
	<-d.done
	return nil
}
