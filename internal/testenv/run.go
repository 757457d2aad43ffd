package testenv

import (
	"context"
	"testing"
	"time"
)

// RunUntil runs run (a job's Run) until done reports true, then cancels it
// and returns what it returned. It fails the test when done is not true
// within wait, with what progress says.
func RunUntil(t testing.TB, run func(context.Context) error, done func() bool, wait time.Duration, progress func() string) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	result := make(chan error, 1)
	go func() { result <- run(ctx) }()
	deadline := time.Now().Add(wait)
	for !done() {
		if time.Now().After(deadline) {
			cancel()
			<-result
			t.Fatalf("not done after %v: %s", wait, progress())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	return <-result
}
