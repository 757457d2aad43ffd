//go:build !unix

package file

import "os"

// identity is "" where the system has no inode numbers: a position then
// carries only the offset, and a resume checks only the file's size.
func identity(os.FileInfo) string { return "" }

// writable cannot tell here without creating a file: it says nil, and the
// first write reports a folder that does not take files.
func writable(string) error { return nil }
