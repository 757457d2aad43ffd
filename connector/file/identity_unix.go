//go:build unix

package file

import (
	"os"
	"strconv"
	"syscall"
)

// identity names the file info describes as DEV:INODE, which a rename
// keeps and a replacement (a new file moved over the path, a rotation)
// changes; "" if the system does not tell.
func identity(info os.FileInfo) string {
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	return strconv.FormatUint(uint64(st.Dev), 10) + ":" + strconv.FormatUint(uint64(st.Ino), 10)
}

// writable reports why the process may not create files in dir (nil when
// it may), without creating any.
func writable(dir string) error {
	const wOK = 0x2 // W_OK of access(2)
	if err := syscall.Access(dir, wOK); err != nil {
		return &os.PathError{Op: "write to", Path: dir, Err: err}
	}
	return nil
}
