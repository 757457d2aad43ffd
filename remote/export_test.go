package remote

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DropBucket deletes the registry bucket a test used when it ends, so that
// the machine's NATS does not collect them.
func DropBucket(t testing.TB, url, bucket string) {
	t.Cleanup(func() {
		nc, err := natsgo.Connect(url)
		if err != nil {
			return
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := js.DeleteKeyValue(ctx, bucket); err != nil && err != jetstream.ErrBucketNotFound {
			t.Logf("deleting bucket %s: %v", bucket, err)
		}
	})
}

// Register writes registration p into bucket as a provider would, once.
func Register(t testing.TB, url, bucket string, p Provider) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, kv, err := openBucket(ctx, url, bucket)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	val, _ := json.Marshal(p)
	if _, err := kv.Put(ctx, natsKey(p.Service, p.ID), val); err != nil {
		t.Fatal(err)
	}
}

// CreateBucket creates the registry bucket with storage TTL ttl, as an
// operator may have.
func CreateBucket(t testing.TB, url, bucket string, ttl time.Duration) {
	t.Helper()
	nc, err := natsgo.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, History: 1, TTL: ttl}); err != nil {
		t.Fatal(err)
	}
}
