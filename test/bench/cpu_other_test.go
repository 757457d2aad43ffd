//go:build !unix

package bench

import (
	"testing"
	"time"
)

// processCPU is 0 where getrusage is not available: the CPU ratios are
// not reported.
func processCPU(*testing.B) time.Duration { return 0 }
