package remote

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/kisflow-go/kisflow/driver"
	"github.com/kisflow-go/kisflow/filter"
	"github.com/kisflow-go/kisflow/stream"
)

// The cluster strategies, with dubbo's meaning.
const (
	Failover  = "failover"  // on a provider's failure, retry on another (retries times)
	Failfast  = "failfast"  // one try
	Failsafe  = "failsafe"  // on failure, log and yield no rows
	Forking   = "forking"   // call forks providers at once, take the first success
	Broadcast = "broadcast" // call every provider, fail if any fails
)

// Options configure a Client.
type Options struct {
	Service     string        // for errors
	Cluster     string        // a strategy; default failover
	LoadBalance string        // a balancer; default random
	Retries     int           // failover: other providers tried after the first
	Timeout     time.Duration // of each attempt; default 2s
	Forks       int           // forking: providers called at once; default 2
	HashField   string        // consistent_hash: the row field hashed; default the flow's stream key
	// BreakerFailures is how many failures of a provider in a row open
	// its breaker: it is left out of picks for BreakerOpen, then tried
	// again (one more failure opens it again). 0: default 3; < 0: no
	// breaker. A provider is picked even with its breaker open when every
	// provider's is.
	BreakerFailures int
	BreakerOpen     time.Duration // default 5s
	// MaxMessage is the largest message a call sends or takes, in bytes
	// (default DefaultMaxMessage): a batch whose request, or whose reply,
	// would be larger is split in halves called one after the other, and a
	// row too large alone is the call's row error (dead-lettered in a
	// stream) while the other rows go on.
	MaxMessage int
	Logger     *slog.Logger
	// Observe, when set, is told of every call to a provider: how long it
	// took and its error (nil on success), for metrics per provider.
	Observe func(p Provider, fname string, took time.Duration, err error)
}

// Client calls remote functions of one service: it picks providers of its
// Directory through its Balancer and applies its cluster strategy. Safe
// for concurrent use.
type Client struct {
	dir    Directory
	lb     Balancer
	active *Active
	o      Options

	noKey   atomic.Bool  // the consistent_hash field was missed (logged once)
	split   atomic.Bool  // a batch was split to fit MaxMessage (logged once)
	dropped atomic.Int64 // rows of failsafe calls that failed
	mu      sync.Mutex
	conns   map[string]*conn    // by address
	health  map[string]*breaker // by provider ID
	// drained holds, by provider ID, until when a provider that refused a
	// call as draining is left out of picks: its deregistration may not
	// have reached the directory yet.
	drained map[string]time.Time
}

// breaker is the failure record of one provider.
type breaker struct {
	fails     int
	openUntil time.Time
}

// record notes the outcome of a call to p: a provider failure or not.
func (c *Client) record(p Provider, failed bool) {
	if c.o.BreakerFailures < 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.health[p.ID]
	if !failed {
		if b != nil {
			delete(c.health, p.ID)
		}
		return
	}
	if b == nil {
		b = &breaker{}
		c.health[p.ID] = b
	}
	b.fails++
	if b.fails >= c.o.BreakerFailures {
		if b.openUntil.IsZero() || time.Now().After(b.openUntil) {
			c.o.Logger.Warn("remote provider's breaker opens", "service", c.o.Service, "provider", p.Addr, "failures", b.fails, "for", c.o.BreakerOpen)
		}
		b.openUntil = time.Now().Add(c.o.BreakerOpen)
	}
}

// isDrained reports whether p refused a call as draining lately.
func (c *Client) isDrained(p Provider) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	until, ok := c.drained[p.ID]
	return ok && time.Now().Before(until)
}

// closed returns the providers of ps whose breaker is not open and that
// did not refuse a call as draining lately, or ps when none is left.
func (c *Client) closed(ps []Provider) []Provider {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.health) == 0 && len(c.drained) == 0 {
		return ps
	}
	now := time.Now()
	out := make([]Provider, 0, len(ps))
	for _, p := range ps {
		if b := c.health[p.ID]; b != nil && now.Before(b.openUntil) {
			continue
		}
		if until, ok := c.drained[p.ID]; ok {
			if now.Before(until) {
				continue
			}
			delete(c.drained, p.ID)
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return ps
	}
	return out
}

// Open reports whether the breaker of provider id is open now.
func (c *Client) Open(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.health[id]
	return b != nil && time.Now().Before(b.openUntil)
}

// NewClient returns a client over dir. It takes dir over: Close closes it.
func NewClient(dir Directory, o Options) (*Client, error) {
	switch o.Cluster {
	case "":
		o.Cluster = Failover
	case Failover, Failfast, Failsafe, Forking, Broadcast:
	default:
		return nil, fmt.Errorf("cluster %q: want failover, failfast, failsafe, forking or broadcast", o.Cluster)
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.Forks <= 0 {
		o.Forks = 2
	}
	if o.Retries < 0 {
		o.Retries = 0
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.BreakerFailures == 0 {
		o.BreakerFailures = 3
	}
	if o.BreakerOpen <= 0 {
		o.BreakerOpen = 5 * time.Second
	}
	if o.MaxMessage <= 0 {
		o.MaxMessage = DefaultMaxMessage
	}
	active := new(Active)
	lb, err := NewBalancer(o.LoadBalance, active)
	if err != nil {
		return nil, err
	}
	return &Client{dir: dir, lb: lb, active: active, o: o, conns: map[string]*conn{}, health: map[string]*breaker{}}, nil
}

// Dropped returns how many rows failsafe calls that failed yielded no
// rows for: neither written nor dead-lettered.
func (c *Client) Dropped() int64 { return c.dropped.Load() }

// Close closes the connections and the directory. It logs how many rows
// failsafe dropped, if any.
func (c *Client) Close() error {
	if n := c.dropped.Load(); n > 0 {
		c.o.Logger.Warn(fmt.Sprintf("remote: failsafe dropped %d rows whose calls failed: they were neither written nor dead-lettered", n), "service", c.o.Service)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, cn := range c.conns {
		errs = append(errs, cn.close())
	}
	c.conns = map[string]*conn{}
	errs = append(errs, c.dir.Close())
	return errors.Join(errs...)
}

func (c *Client) conn(addr string) (*conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cn := c.conns[addr]; cn != nil {
		return cn, nil
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithWriteBufferSize(transportBuffer), grpc.WithReadBufferSize(transportBuffer),
		grpc.WithInitialWindowSize(transportWindow), grpc.WithInitialConnWindowSize(transportWindow),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(codec{}), grpc.MaxCallRecvMsgSize(c.o.MaxMessage), grpc.MaxCallSendMsgSize(c.o.MaxMessage)))
	if err != nil {
		return nil, err
	}
	cn := &conn{cc: cc}
	c.conns[addr] = cn
	return cn, nil
}

// providerError is a call that failed because of the provider or the way
// to it (it is down, it timed out, it does not serve the function), not
// because of the function: another provider may succeed.
type providerError struct {
	p   Provider
	err error
}

func (e *providerError) Error() string { return fmt.Sprintf("provider %s: %v", e.p.Addr, e.err) }
func (e *providerError) Unwrap() error { return e.err }

// Invoke calls the function of call through the cluster strategy. A
// provider's failure is tried elsewhere as the strategy says; the
// function's own failure is returned as it is (with its stream.Permanent
// or stream.Fatal mark), for the flow's retries and dead-letter path.
func (c *Client) Invoke(ctx context.Context, call *driver.Invocation) (*driver.Outcome, error) {
	// A fork still sending when the call returns (forking takes the
	// first answer) must not read the engine's rows after: it sends a
	// copy. Every other strategy is done with them when Invoke returns.
	encoded, err := encodeRows(call.Rows, c.o.Cluster != Forking)
	if err != nil {
		return nil, stream.Permanent(fmt.Errorf("remote function %q: %w", call.Func, err))
	}
	req := &request{Flow: call.Flow, Func: call.Func, Params: call.Params, Rows: encoded}
	var ps []Provider
	for _, p := range c.dir.Providers() {
		if p.serves(call.Func) {
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		return nil, stream.Unavailable(fmt.Errorf("remote function %q: %w; waiting for one", call.Func, c.noProvider(call.Func)))
	}
	if ps = c.usable(ctx, ps); len(ps) == 0 {
		return nil, fmt.Errorf("remote function %q: the breaker of every provider of service %q is open: %w", call.Func, c.o.Service, filter.ErrBreakerOpen)
	}
	field := c.o.HashField
	if field == "" {
		field = call.KeyField
	}
	if c.o.LoadBalance != ConsistentHash || len(ps) == 1 || len(call.Rows) == 0 {
		return c.fitted(ctx, ps, req, "")
	}
	// consistent_hash: each row goes to its key's provider, so the batch
	// is split by provider and the answers put back together.
	keys := make([]string, req.Rows.len())
	groups := map[string][]int{} // provider ID -> row indexes
	var order []string
	var first = map[string]string{} // provider ID -> a key of its rows
	for i := range keys {
		keys[i] = rowKey(req.Rows.at(i), field)
		id := c.lb.Pick(ps, keys[i], nil).ID
		if _, ok := groups[id]; !ok {
			order = append(order, id)
			first[id] = keys[i]
		}
		groups[id] = append(groups[id], i)
	}
	if len(order) == 1 {
		if field != "" && keys[0] == "" && !slices.ContainsFunc(keys, func(k string) bool { return k != "" }) && c.noKey.CompareAndSwap(false, true) {
			c.o.Logger.WarnContext(ctx, "remote: consistent_hash: no row of a batch has the hashed field, so every row goes to one provider; set hash_field (or the flow's stream.key) to a field the rows have",
				"service", c.o.Service, "func", req.Func, "field", field)
		}
		return c.fitted(ctx, ps, req, keys[0])
	}
	outs := make([]*driver.Outcome, len(order))
	errs := make([]error, len(order))
	var wg sync.WaitGroup
	for gi, id := range order {
		idx := groups[id]
		text := make([]json.RawMessage, len(idx))
		for j, i := range idx {
			text[j] = req.Rows.at(i)
		}
		sub := &request{Flow: req.Flow, Func: req.Func, Params: req.Params, Rows: textRows(text)}
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[gi], errs[gi] = c.fitted(ctx, ps, sub, first[id])
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	idx := make([][]int, len(order))
	for gi, id := range order {
		idx[gi] = groups[id]
	}
	return merge(outs, idx), nil
}

// merge puts together the outcomes of the parts of a batch, part i of the
// rows idx[i] of the batch: the rows in order of parts, the row errors at
// their rows' place in the batch, an action asked for by any part (the
// first part's jump).
func merge(outs []*driver.Outcome, idx [][]int) *driver.Outcome {
	merged := &driver.Outcome{}
	for gi, o := range outs {
		merged.Rows = append(merged.Rows, o.Rows...)
		for _, re := range o.RowErrors {
			re.Index = idx[gi][re.Index]
			merged.RowErrors = append(merged.RowErrors, re)
		}
		merged.DataReuse = merged.DataReuse || o.DataReuse
		merged.ForceEntryNext = merged.ForceEntryNext || o.ForceEntryNext
		merged.Abort = merged.Abort || o.Abort
		if merged.JumpFunc == "" {
			merged.JumpFunc = o.JumpFunc
		}
	}
	return merged
}

// tooLargeError is a call whose request or reply was over the message
// limit (gRPC's ResourceExhausted): not the provider's failure nor the
// function's, but the batch's size; fitted splits it.
type tooLargeError struct{ err error }

func (e *tooLargeError) Error() string { return e.err.Error() }
func (e *tooLargeError) Unwrap() error { return e.err }

// fitted runs req through the cluster strategy in messages within
// MaxMessage: a request over it, or one whose reply was (the provider
// refuses to send such a reply), is split in halves called one after the
// other, and so on down to one row; a row too large alone is the call's
// row error (dead-lettered in a stream) and the other rows go on.
func (c *Client) fitted(ctx context.Context, ps []Provider, req *request, key string) (*driver.Outcome, error) {
	n := req.Rows.len()
	var why error
	if size := requestSize(req); size > c.o.MaxMessage {
		why = fmt.Errorf("remote function %q: %d rows encode to about %d bytes, over the limit of %d bytes per remote call", req.Func, n, size, c.o.MaxMessage)
	} else {
		out, err := c.strategy(ctx, ps, req, key)
		var tl *tooLargeError
		if err == nil || !errors.As(err, &tl) {
			return out, err
		}
		why = tl
	}
	switch n {
	case 0:
		return nil, stream.Permanent(why)
	case 1:
		return &driver.Outcome{RowErrors: []driver.RowError{{Index: 0, Msg: "the row is too large for a remote call: " + why.Error()}}}, nil
	}
	if c.split.CompareAndSwap(false, true) {
		c.o.Logger.WarnContext(ctx, "remote: a batch over the message limit is split into smaller calls", "service", c.o.Service, "func", req.Func, "rows", n, "why", why.Error())
	}
	half := n / 2
	parts := [][2]int{{0, half}, {half, n}}
	outs := make([]*driver.Outcome, len(parts))
	idx := make([][]int, len(parts))
	for i, p := range parts {
		sub := &request{Flow: req.Flow, Func: req.Func, Params: req.Params, Rows: req.Rows.slice(p[0], p[1])}
		out, err := c.fitted(ctx, ps, sub, key)
		if err != nil {
			return nil, err
		}
		outs[i] = out
		for j := p[0]; j < p[1]; j++ {
			idx[i] = append(idx[i], j)
		}
	}
	return merge(outs, idx), nil
}

// rowKey is the text of field in a JSON row: a string's value, another
// value's JSON text, "" when the row has no such field, the whole row when
// field is "". It scans the row for the field instead of decoding it.
func rowKey(raw json.RawMessage, field string) string {
	if field == "" {
		return string(raw)
	}
	if v, ok := scanField(raw, field); ok {
		return v
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return string(raw)
	}
	v := m[field]
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	return string(v)
}

// scanField finds field among the members of the JSON object b, as
// rowKey returns it; ok == false leaves the row to a decoder (escaped
// keys or strings, or text that is no object).
func scanField(b []byte, field string) (string, bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return "", false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return "", skipSpace(b, i+1) == len(b)
	}
	var found []byte // the field's value
	for i < len(b) {
		if b[i] != '"' {
			return "", false
		}
		end := bytes.IndexByte(b[i+1:], '"')
		if end < 0 {
			return "", false
		}
		key := b[i+1 : i+1+end]
		if bytes.IndexByte(key, '\\') >= 0 {
			return "", false
		}
		i = skipSpace(b, i+2+end)
		if i >= len(b) || b[i] != ':' {
			return "", false
		}
		start := skipSpace(b, i+1)
		stop, ok := skipValue(b, start)
		if !ok {
			return "", false
		}
		if string(key) == field {
			found = b[start:stop]
		}
		i = skipSpace(b, stop)
		if i >= len(b) {
			return "", false
		}
		switch b[i] {
		case '}':
			if skipSpace(b, i+1) != len(b) {
				return "", false
			}
			switch {
			case found == nil || string(found) == "null":
				return "", true
			case found[0] != '"':
				return string(found), true
			case bytes.IndexByte(found, '\\') >= 0:
				return "", false
			}
			return string(found[1 : len(found)-1]), true
		case ',':
			i = skipSpace(b, i+1)
		default:
			return "", false
		}
	}
	return "", false
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the index after the JSON value starting at b[i].
func skipValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return i, false
	}
	depth := 0
	for j := i; j < len(b); j++ {
		switch c := b[j]; c {
		case '"':
			for j++; j < len(b) && b[j] != '"'; j++ {
				if b[j] == '\\' {
					j++
				}
			}
			if j >= len(b) {
				return j, false
			}
			if depth == 0 {
				return j + 1, true
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return j, j > i
			}
			if depth--; depth == 0 {
				return j + 1, true
			}
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return j, j > i
			}
		}
	}
	return len(b), depth == 0 && len(b) > i
}

// strategy runs req through the cluster strategy over ps.
func (c *Client) strategy(ctx context.Context, ps []Provider, req *request, key string) (*driver.Outcome, error) {
	switch c.o.Cluster {
	case Failfast:
		out, err := c.once(ctx, c.lb.Pick(ps, key, nil), req)
		if err != nil {
			return nil, unreachable(err, []error{err})
		}
		return out, nil
	case Failsafe:
		out, err := c.once(ctx, c.lb.Pick(ps, key, nil), req)
		if tl := (*tooLargeError)(nil); errors.As(err, &tl) {
			return nil, err // split by fitted, not dropped
		}
		if err != nil {
			c.dropped.Add(int64(req.Rows.len()))
			c.o.Logger.WarnContext(ctx, "remote call failed; failsafe: its batch yields no rows", "service", c.o.Service, "func", req.Func, "rows", req.Rows.len(), "err", err)
			return &driver.Outcome{}, nil
		}
		return out, nil
	case Forking:
		return c.forking(ctx, ps, req, key)
	case Broadcast:
		return c.broadcast(ctx, ps, req)
	}
	// failover
	tried := map[string]bool{}
	var errs []error
	drains := 0 // providers that refused as draining: not counted as attempts
	for attempt := 0; attempt <= c.o.Retries; attempt++ {
		p := c.lb.Pick(ps, key, tried)
		tried[p.ID] = true
		out, err := c.once(ctx, p, req)
		if draining(err) && drains < len(ps) {
			drains++
			attempt--
		}
		if err == nil {
			if attempt > 0 {
				// errs holds why each provider tried before failed.
				c.o.Logger.InfoContext(ctx, "remote call failed over", "service", c.o.Service, "func", req.Func, "to", p.Addr, "attempt", attempt+1, "failed", errors.Join(errs...).Error())
			}
			return out, nil
		}
		var pe *providerError
		if !errors.As(err, &pe) || ctx.Err() != nil {
			return nil, err // the function's own error, or the caller gave up
		}
		errs = append(errs, err)
		if fresh := c.liveOf(ctx, req.Func); len(fresh) > 0 {
			ps = fresh // providers that appeared or vanished meanwhile
		}
	}
	return nil, unreachable(fmt.Errorf("remote function %q: %d attempt(s) failed: %w", req.Func, len(errs), errors.Join(errs...)), errs)
}

// unreachable marks err stream.Unavailable when every one of errs is a
// provider that could not be reached (down, restarting, refusing
// connections): no provider is available, and the flow waits for one
// rather than failing the batch. A timeout or a provider's own refusal
// stays a failure of the call.
func unreachable(err error, errs []error) error {
	for _, e := range errs {
		var pe *providerError
		if !errors.As(e, &pe) || status.Code(pe.err) != codes.Unavailable {
			return err
		}
	}
	if len(errs) == 0 {
		return err
	}
	return stream.Unavailable(err)
}

// noProvider says why no provider can be called for fname: none of the
// service is registered, none of the version and group asked for (naming
// those that exist), or none registered the function.
func (c *Client) noProvider(fname string) error {
	all, filtered := c.dir.Providers(), c.dir.Providers()
	version, group := "", ""
	if l, ok := c.dir.(Lister); ok {
		all = l.All()
		version, group = l.Filter()
	}
	var want []string
	if version != "" {
		want = append(want, fmt.Sprintf("version %q", version))
	}
	if group != "" {
		want = append(want, fmt.Sprintf("group %q", group))
	}
	switch {
	case len(all) == 0:
		return fmt.Errorf("no provider of service %q is registered now (is `kisflow serve --service %s` running?)", c.o.Service, c.o.Service)
	case len(filtered) == 0:
		return fmt.Errorf("none of the %d providers of service %q has %s (they have %s)", len(all), c.o.Service, strings.Join(want, " and "), describe(all))
	case fname != "" && !slices.ContainsFunc(filtered, func(p Provider) bool { return p.serves(fname) }):
		return fmt.Errorf("none of the %d providers of service %q serves it (they serve %s)", len(filtered), c.o.Service, funcsOf(filtered))
	}
	return fmt.Errorf("every provider of service %q is left out by its breaker", c.o.Service)
}

// Check returns an error, naming the service, the version and group asked
// for and the providers that exist, when no provider can be called now
// (for kisflow dry-run).
func (c *Client) Check() error {
	if len(c.dir.Providers()) > 0 {
		return nil
	}
	return c.noProvider("")
}

// CheckFuncs returns an error unless every function of fnames can be
// called now (for kisflow dry-run): a provider of the version and group
// asked for serves it, as the registry lists it. Providers whose functions
// are not known (static addresses, DNS) are reached instead, with a call
// of no function that a KisFlow provider refuses without running
// anything: an address that is not one (another server, a NATS port) is
// an error naming it.
func (c *Client) CheckFuncs(ctx context.Context, fnames []string) error {
	if err := c.Check(); err != nil {
		return err
	}
	ps := c.dir.Providers()
	var errs []error
	for _, f := range fnames {
		if !slices.ContainsFunc(ps, func(p Provider) bool { return p.serves(f) }) {
			errs = append(errs, fmt.Errorf("function %q: %w", f, c.noProvider(f)))
		}
	}
	for _, p := range ps {
		if len(p.Funcs) == 0 {
			if err := c.probe(ctx, p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// probeTimeout bounds the call probe makes.
const probeTimeout = 5 * time.Second

// probe reaches provider p with a call of no function, which a KisFlow
// provider refuses (NotFound) without running anything.
func (c *Client) probe(ctx context.Context, p Provider) error {
	cn, err := c.conn(p.Addr)
	if err == nil {
		actx, cancel := context.WithTimeout(ctx, probeTimeout)
		defer cancel()
		err = cn.unaryCall(ctx, actx, &request{Func: ""}, &reply{})
		if status.Code(err) == codes.NotFound {
			return nil
		}
		if err == nil {
			err = errors.New("it accepted a call of no function")
		}
	}
	return fmt.Errorf("provider %s does not answer as a KisFlow provider (is `kisflow serve` listening there?): %w", p.Addr, err)
}

// describe lists the versions and groups of ps, with how many have each.
func describe(ps []Provider) string {
	n := map[string]int{}
	var keys []string
	for _, p := range ps {
		k := fmt.Sprintf("version %q group %q", p.Version, p.Group)
		if n[k] == 0 {
			keys = append(keys, k)
		}
		n[k]++
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s (%d)", k, n[k])
	}
	return strings.Join(parts, ", ")
}

// funcsOf lists the functions ps serve.
func funcsOf(ps []Provider) string {
	var fs []string
	for _, p := range ps {
		for _, f := range p.Funcs {
			if !slices.Contains(fs, f) {
				fs = append(fs, f)
			}
		}
	}
	slices.Sort(fs)
	return strings.Join(fs, ", ")
}

func (c *Client) liveOf(ctx context.Context, fname string) []Provider {
	var ps []Provider
	for _, p := range c.dir.Providers() {
		if p.serves(fname) {
			ps = append(ps, p)
		}
	}
	return c.usable(ctx, ps)
}

// usable returns the providers of ps a call may go to: those whose
// breaker in this client is closed (all of them when every one's is open;
// not for broadcast, which calls them all), less those whose breaker of
// the step's breaker filter is open (driver.BreakersFrom), which may leave
// none.
func (c *Client) usable(ctx context.Context, ps []Provider) []Provider {
	if c.o.Cluster != Broadcast {
		ps = c.closed(ps)
	}
	bs := driver.BreakersFrom(ctx)
	if bs == nil {
		return ps
	}
	out := make([]Provider, 0, len(ps))
	for _, p := range ps {
		if !bs.Open(p.ID) {
			out = append(out, p)
		}
	}
	return out
}

func (c *Client) forking(ctx context.Context, ps []Provider, req *request, key string) (*driver.Outcome, error) {
	n := min(c.o.Forks, len(ps))
	tried := map[string]bool{}
	picked := make([]Provider, 0, n)
	for range n {
		p := c.lb.Pick(ps, key, tried)
		tried[p.ID] = true
		picked = append(picked, p)
	}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type res struct {
		out *driver.Outcome
		err error
	}
	ch := make(chan res, n)
	for _, p := range picked {
		go func() {
			out, err := c.once(fctx, p, req)
			ch <- res{out, err}
		}()
	}
	var errs []error
	for range n {
		r := <-ch
		if r.err == nil {
			return r.out, nil
		}
		errs = append(errs, r.err)
	}
	return nil, unreachable(fmt.Errorf("remote function %q: all %d forks failed: %w", req.Func, n, errors.Join(errs...)), errs)
}

func (c *Client) broadcast(ctx context.Context, ps []Provider, req *request) (*driver.Outcome, error) {
	outs := make([]*driver.Outcome, len(ps))
	errs := make([]error, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], errs[i] = c.once(ctx, p, req)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("remote function %q: broadcast to %d providers: %w", req.Func, len(ps), err)
	}
	return outs[0], nil
}

// once calls one provider.
func (c *Client) once(ctx context.Context, p Provider, req *request) (_ *driver.Outcome, failure error) {
	cn, err := c.conn(p.Addr)
	if err != nil {
		return nil, &providerError{p, err}
	}
	n := c.active.counter(p.ID)
	n.Add(1)
	defer n.Add(-1)
	actx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	if c.o.Observe != nil {
		start := time.Now()
		defer func() { c.o.Observe(p, req.Func, time.Since(start), failure) }()
	}
	var rep reply
	if bs := driver.BreakersFrom(ctx); bs != nil {
		// The step's breaker filter counts this provider's failures, the
		// function's own as well as the provider's, as it counts a
		// local function's; an attempt that timed out counts too (the
		// caller giving up does not), and so does a call whose every row
		// the function rejected (a provider whose function rejects all it
		// gets is as broken as one that errs), though it returns its
		// outcome as any answer.
		var out *driver.Outcome
		var tooLarge error // the batch's size, no failure of the provider
		var gone error     // the provider is draining: no failure of it either
		err := bs.Do(ctx, p.ID, func(context.Context) error {
			var err error
			out, err = c.call(ctx, actx, cn, p, req, &rep)
			if tl := (*tooLargeError)(nil); errors.As(err, &tl) {
				tooLarge = err
				return nil
			}
			if err == nil && everyRowRejected(req, out) {
				return errEveryRowRejected
			}
			if draining(err) {
				gone = err
				return nil
			}
			return err
		})
		switch {
		case tooLarge != nil:
			return nil, tooLarge
		case gone != nil:
			return nil, gone
		case errors.Is(err, filter.ErrBreakerOpen):
			// Its trial call is taken by another: try elsewhere.
			return nil, &providerError{p, err}
		case errors.Is(err, errEveryRowRejected):
			return out, nil
		}
		return out, err
	}
	return c.call(ctx, actx, cn, p, req, &rep)
}

// errEveryRowRejected marks, for the step's breaker filter only, an
// answer whose every row the function rejected.
var errEveryRowRejected = errors.New("the function rejected every row of the call")

// everyRowRejected reports whether the function rejected each row of a
// call of at least one row.
func everyRowRejected(req *request, out *driver.Outcome) bool {
	n := req.Rows.len()
	if n == 0 || len(out.RowErrors) < n {
		return false
	}
	rejected := make(map[int]bool, n)
	for _, e := range out.RowErrors {
		rejected[e.Index] = true
	}
	return len(rejected) >= n
}

// call makes the gRPC call of once, actx its attempt's context.
func (c *Client) call(ctx, actx context.Context, cn *conn, p Provider, req *request, rep *reply) (_ *driver.Outcome, failure error) {
	err := cn.invoke(ctx, actx, req, rep)
	if err == nil {
		c.record(p, false)
		return rep.outcome(), nil
	}
	if draining(err) || (status.Code(err) == codes.Unavailable && c.isDrained(p)) {
		// The provider is stopping, and says so (or said so to another
		// call, and its listener is now closed): not a failure of it.
		// It is left out of picks, its breaker untouched.
		err = status.Error(codes.Unavailable, drainingMsg)
		c.mu.Lock()
		if c.drained == nil {
			c.drained = map[string]time.Time{}
		}
		c.drained[p.ID] = time.Now().Add(c.o.BreakerOpen)
		c.mu.Unlock()
		return nil, &providerError{p, err}
	}
	defer func() {
		var pe *providerError
		c.record(p, errors.As(failure, &pe))
	}()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("remote function %q on %s: %w", req.Func, p.Addr, ctx.Err())
	}
	st, _ := status.FromError(err)
	msg := fmt.Errorf("remote function %q on %s: %s", req.Func, p.Addr, st.Message())
	switch st.Code() {
	case codes.InvalidArgument:
		return nil, stream.Permanent(msg)
	case codes.FailedPrecondition:
		return nil, stream.Fatal(msg)
	case codes.Aborted:
		return nil, msg // the function failed: the flow's retries decide
	case codes.ResourceExhausted:
		return nil, &tooLargeError{msg} // the batch's size: split, not failed over
	case codes.DeadlineExceeded:
		if ctx.Err() == nil {
			return nil, &providerError{p, fmt.Errorf("no answer within %s (timeout)", c.o.Timeout)}
		}
	}
	return nil, &providerError{p, err}
}
