// Package statelock takes exclusive locks on files of a state folder, so
// that two processes do not run the same flow on the same state at once.
package statelock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ErrHeld is wrapped by Acquire's error when another process holds the
// lock.
var ErrHeld = errors.New("two runs on one state folder; stop one, or give each its own state folder")

// Lock is a held lock; Release lets it go.
type Lock struct{ f *os.File }

// Acquire takes the exclusive lock of path (created with its folder if
// needed) without waiting, and writes holder there with this process's
// ID and the time, for whoever finds the lock held. The lock is the
// operating system's (flock): it ends with the process, also when it is
// killed. When another process holds it, the error wraps ErrHeld and
// quotes what the holder wrote.
func Acquire(path, holder string) (*Lock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := tryLock(f); err != nil {
		f.Close()
		if errors.Is(err, ErrHeld) {
			b, _ := os.ReadFile(path)
			who := strings.TrimSpace(string(b))
			if who == "" {
				who = "a process that has not said who it is yet"
			}
			return nil, fmt.Errorf("%s is locked by %s: %w", path, who, ErrHeld)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	who := fmt.Sprintf("%s (pid %d, since %s)", holder, os.Getpid(), time.Now().UTC().Format(time.RFC3339))
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(who+"\n"), 0) // information only
	}
	return &Lock{f: f}, nil
}

// Release lets the lock go. The file stays, for the next holder.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	_ = l.f.Truncate(0)
	err := l.f.Close() // closing the last descriptor releases the lock
	l.f = nil
	return err
}
