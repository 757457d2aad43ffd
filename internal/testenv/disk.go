package testenv

import (
	"os/exec"
	"strings"
	"testing"
)

// SmallDisk mounts a tmpfs of size (as mount's -o size=, such as "2m") on
// a new folder and unmounts it when the test ends, so that a test can fill
// a disk. It skips the test, with the reason, where mounting is not
// permitted.
func SmallDisk(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a %s tmpfs for a full disk (%v: %s)", size, err, strings.TrimSpace(string(out)))
	}
	// Cleanups run last first: this unmounts before t.TempDir's removal.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// GrowDisk gives the tmpfs SmallDisk mounted at dir more room, keeping its
// files.
func GrowDisk(t *testing.T, dir, size string) {
	t.Helper()
	if out, err := exec.Command("mount", "-o", "remount,size="+size, dir).CombinedOutput(); err != nil {
		t.Fatalf("remount %s with size %s: %v: %s", dir, size, err, out)
	}
}
