package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	kstream "github.com/kisflow-go/kisflow/stream"
)

// A checkpoint file deleted or replaced while the store is open fails the
// next save with a Fatal error naming the file, instead of saving
// positions nobody will read.
func TestStoreNoticesItsFileGone(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		do   func(t *testing.T, path string)
	}{
		{"deleted", func(t *testing.T, path string) {
			for _, p := range []string{path, path + "-wal", path + "-shm"} {
				if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
					t.Fatal(err)
				}
			}
		}},
		{"replaced", func(t *testing.T, path string) {
			other := filepath.Join(t.TempDir(), "other.db")
			s, err := OpenSQLite(context.Background(), other)
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			if err := os.Rename(other, path); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "checkpoints.db")
			s, err := OpenSQLite(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.SavePosition(ctx, "f", "10"); err != nil {
				t.Fatal(err)
			}
			c.do(t, path)
			err = s.SavePosition(ctx, "f", "20")
			if !kstream.IsFatal(err) || !strings.Contains(err.Error(), path) {
				t.Fatalf("save after the file was %s: %v, want a fatal error naming %s", c.name, err, path)
			}
		})
	}
}

// TestOpenSQLiteAtOnce opens one new file from many stores at once, as the
// flows of one run (or two processes) do on their first start: each must
// open, none be refused because another held the file's lock while
// making it.
func TestOpenSQLiteAtOnce(t *testing.T) {
	for round := range 5 {
		path := filepath.Join(t.TempDir(), fmt.Sprintf("round%d", round), "checkpoints.db")
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Go(func() {
				s, err := OpenSQLite(context.Background(), path)
				if err != nil {
					errs <- err
					return
				}
				errs <- errors.Join(s.SavePosition(context.Background(), "f", "1"), s.Close())
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
	}
}
