package remote

import (
	"context"
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
