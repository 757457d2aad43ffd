package checkpoint

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	kstream "github.com/kisflow-go/kisflow/stream"
)

// FileGuard remembers which file (device and inode) a database path named
// when it was opened, so that a file deleted or replaced while open is
// noticed: SQLite goes on writing to the old, unlinked file, and every
// commit after that would be lost without an error.
type FileGuard struct {
	path string
	info os.FileInfo
}

// NewFileGuard records the file path names now.
func NewFileGuard(path string) (*FileGuard, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return &FileGuard{path: path, info: info}, nil
}

// Check returns a stream.Fatal error naming the file when path no longer
// names the file it named at open (deleted, or replaced by another file).
// A nil guard checks nothing.
func (g *FileGuard) Check() error {
	if g == nil {
		return nil
	}
	info, err := os.Stat(g.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return kstream.Fatal(fmt.Errorf("database file %s was deleted while open: what was committed to it since is lost; restore the file or start over", g.path))
	case err != nil:
		return fmt.Errorf("check database file %s: %w", g.path, err)
	case !os.SameFile(info, g.info):
		return kstream.Fatal(fmt.Errorf("database file %s was replaced by another file while open: what was committed to the old one since is lost; restore the file or start over", g.path))
	}
	return nil
}
