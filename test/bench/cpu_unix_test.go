//go:build unix

package bench

import (
	"syscall"
	"testing"
	"time"
)

// processCPU is the CPU time (user and system, every thread) this process
// has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
