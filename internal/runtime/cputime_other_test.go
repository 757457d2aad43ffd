//go:build !unix

package runtime

import "time"

// cpuTime is not measured here: see the unix version.
func cpuTime() (time.Duration, bool) { return 0, false }
