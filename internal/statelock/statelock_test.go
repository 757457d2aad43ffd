package statelock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestASecondHolderIsRefusedUntilTheFirstReleases(t *testing.T) {
	path := filepath.Join(t.TempDir(), "locks", "F.lock")
	first, err := Acquire(path, "run of F")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(path, "another run of F")
	if !errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), fmt.Sprintf("locked by run of F (pid %d, since ", os.Getpid())) {
		t.Fatalf("second Acquire: %v", err)
	}
	if err := first.Release(); err != nil {
		t.Fatal(err)
	}
	again, err := Acquire(path, "run of F")
	if err != nil {
		t.Fatalf("after Release: %v", err)
	}
	_ = again.Release()
}
