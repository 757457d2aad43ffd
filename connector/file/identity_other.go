//go:build !unix

package file

import "os"

// identity is "" where the system has no inode numbers: a position then
// carries only the offset, and a resume checks only the file's size.
func identity(os.FileInfo) string { return "" }
