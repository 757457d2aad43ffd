package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The backoff between attempts to register while the registry cannot be
// reached, and how often a registration still missing is logged again.
const (
	registerBackoffMin = 100 * time.Millisecond
	registerBackoffMax = 5 * time.Second
	registerLogEvery   = 30 * time.Second
	registerAttempt    = 5 * time.Second // bounds one attempt's writes
)

// registrar keeps a provider registered: it writes the registration
// (again and again, with capped backoff, while the registry cannot be
// reached), then refreshes it, until close deletes it. A provider whose
// registry is down at start serves anyway, and registers once the
// registry is back.
type registrar struct {
	url, bucket string
	key         string
	val         []byte
	ttl         time.Duration
	log         *slog.Logger
	ctx         context.Context // cancelled by close
	cancel      context.CancelFunc
	done        chan struct{}
	// reconnected is signalled when the connection to the registry is
	// back: the registration is refreshed at once, so that callers which
	// kept it through the outage see it fresh.
	reconnected chan struct{}

	mu sync.Mutex
	nc *natsgo.Conn
	kv jetstream.KeyValue // set once the registration is written
	// cfg is the bucket's stream as the registration found it: a bucket
	// lost (NATS restarted without its store) is created again as it was.
	cfg *jetstream.StreamConfig
}

func newRegistrar(o ServeOptions, p Provider) *registrar {
	val, _ := json.Marshal(p)
	ctx, cancel := context.WithCancel(context.Background())
	return &registrar{url: o.Registry, bucket: o.Bucket, key: natsKey(p.Service, p.ID), val: val, ttl: o.TTL, log: o.Logger,
		ctx: ctx, cancel: cancel, done: make(chan struct{}), reconnected: make(chan struct{}, 1)}
}

// register makes one attempt to connect and write the registration. It
// returns how often to refresh it.
func (r *registrar) register() (time.Duration, error) {
	ctx, cancel := context.WithTimeout(r.ctx, registerAttempt)
	defer cancel()
	nc, kv, err := openBucket(ctx, r.url, r.bucket, natsgo.ReconnectHandler(func(*natsgo.Conn) {
		select {
		case r.reconnected <- struct{}{}:
		default:
		}
	}))
	if err != nil {
		return 0, err
	}
	if _, err := kv.Put(ctx, r.key, r.val); err != nil {
		nc.Close()
		return 0, fmt.Errorf("registry %s: register %s: %w", r.url, r.key, err)
	}
	var cfg *jetstream.StreamConfig
	if st, err := kv.Status(ctx); err == nil {
		if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok {
			c := bs.StreamInfo().Config
			cfg = &c
		}
	}
	r.mu.Lock()
	r.nc, r.kv, r.cfg = nc, kv, cfg
	r.mu.Unlock()
	every, err := refreshEvery(ctx, kv, r.ttl)
	if err != nil {
		// Registered: refresh at the registration's pace, at least every
		// third of the bucket TTL serve creates, until the status answers.
		r.log.Warn("remote: registry bucket status not read; refreshing every third of the TTL", "registry", r.url, "err", err)
		every = min(r.ttl, time.Minute) / 3
	}
	return every, nil
}

// start makes the first attempt to register and runs the rest in the
// background: the refreshes once registered, else the attempts again
// with capped backoff. It returns the first attempt's error, which
// start has logged: the provider serves unregistered meanwhile.
func (r *registrar) start() error {
	every, err := r.register()
	if err != nil {
		r.log.Warn("remote: registry unreachable; serving unregistered and registering again with backoff", "registry", r.url, "key", r.key, "err", err)
	}
	go r.run(every, err)
	return err
}

// run registers until it succeeds (failed: the first attempt's error),
// then refreshes the registration every every, until close.
func (r *registrar) run(every time.Duration, failed error) {
	defer close(r.done)
	if failed != nil {
		since, logged, wait := time.Now(), time.Now(), registerBackoffMin
		attempts := 1
		for {
			select {
			case <-r.ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, registerBackoffMax)
			attempts++
			var err error
			if every, err = r.register(); err == nil {
				r.log.Warn(fmt.Sprintf("remote: registered after %s (%d attempts)", time.Since(since).Round(100*time.Millisecond), attempts), "registry", r.url, "key", r.key)
				break
			}
			if r.ctx.Err() != nil {
				return
			}
			if time.Since(logged) >= registerLogEvery {
				logged = time.Now()
				r.log.Warn(fmt.Sprintf("remote: still unregistered after %s; registering again with backoff", time.Since(since).Round(time.Second)), "registry", r.url, "key", r.key, "err", err)
			}
		}
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.reconnected:
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(r.ctx, every)
		r.refresh(pctx)
		cancel()
	}
}

// refresh writes the registration again. A registry that lost its bucket
// (NATS restarted without its JetStream store) answers no more: the
// bucket is created again, as it was, and the registration written in it,
// so that callers find the providers again without any restart.
func (r *registrar) refresh(ctx context.Context) {
	_, err := r.kv.Put(ctx, r.key, r.val)
	if err == nil || r.ctx.Err() != nil {
		return
	}
	if created, cerr := r.recreate(ctx); cerr != nil {
		err = errors.Join(err, cerr)
	} else if created {
		if _, err = r.kv.Put(ctx, r.key, r.val); err == nil {
			r.log.Warn("remote: registry bucket was gone (NATS lost its store?); created it again and registered", "registry", r.url, "bucket", r.bucket, "key", r.key)
			return
		}
	}
	if r.ctx.Err() == nil {
		r.log.Warn("remote: registration not refreshed; retrying", "key", r.key, "err", err)
	}
}

// recreate creates the bucket again if it is gone, with the configuration
// it had when the provider registered (serve's defaults when that could
// not be read). It reports whether the bucket is there again.
func (r *registrar) recreate(ctx context.Context) (bool, error) {
	js, err := jetstream.New(r.nc)
	if err != nil {
		return false, err
	}
	if _, err := js.KeyValue(ctx, r.bucket); !errors.Is(err, jetstream.ErrBucketNotFound) {
		return false, nil // there, or the registry does not answer yet
	}
	r.mu.Lock()
	cfg := r.cfg
	r.mu.Unlock()
	if cfg != nil {
		_, err = js.CreateStream(ctx, *cfg)
	} else {
		_, err = js.CreateKeyValue(ctx, bucketConfig(r.bucket))
	}
	if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) && !errors.Is(err, jetstream.ErrBucketExists) {
		return false, fmt.Errorf("registry %s: creating bucket %s again: %w", r.url, r.bucket, err)
	}
	kv, err := js.KeyValue(ctx, r.bucket)
	if err != nil {
		return false, fmt.Errorf("registry %s: bucket %s: %w", r.url, r.bucket, err)
	}
	r.mu.Lock()
	r.kv = kv
	r.mu.Unlock()
	return true, nil
}

// close stops the attempts and refreshes and deletes the registration, if
// it was written, so that callers stop choosing this provider at once.
func (r *registrar) close() {
	r.cancel()
	<-r.done
	r.mu.Lock()
	nc, kv := r.nc, r.kv
	r.mu.Unlock()
	if kv == nil {
		return
	}
	defer nc.Close()
	dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := kv.Delete(dctx, r.key); err != nil {
		r.log.Warn("remote: registration not deleted; callers drop it after its TTL", "key", r.key, "ttl", r.ttl, "err", err)
	}
}
