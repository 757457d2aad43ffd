//go:build unix

package runtime

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time the process has used (user and system), for
// benchmarks to report work per CPU second beside work per second: on a
// machine other jobs share, the first moves much less with their load.
func cpuTime() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
