package testenv

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// KafkaCommittedIDs reads topic from the start as a read-committed
// consumer until it goes quiet (three empty polls), and counts each row's
// "id": what committed transactions wrote, with repeats counted.
func KafkaCommittedIDs(t testing.TB, addrs, topic string) map[int]int {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(addrs, ",")...), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	seen := map[int]int{}
	for idle := 0; idle < 3; {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		fetches := cl.PollFetches(ctx)
		cancel()
		if fetches.NumRecords() == 0 {
			idle++
		}
		fetches.EachRecord(func(r *kgo.Record) {
			var row struct {
				ID int `json:"id"`
			}
			if err := json.Unmarshal(r.Value, &row); err != nil {
				t.Fatalf("record %q: %v", r.Value, err)
			}
			seen[row.ID]++
		})
	}
	return seen
}
