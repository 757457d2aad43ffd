package kisflow

import "time"

// CheckSourceMust makes f check its first function's source.must, as the
// instances of a Job do, so that tests can run the check through Run.
func CheckSourceMust(f Flow) { f.(*flow).checkMust = true }

// WithDriverRetryAfter sets how long Connector.Driver waits after a failed
// start before trying again, so that a test does not depend on timing.
func WithDriverRetryAfter(d time.Duration) Option { return func(e *Engine) { e.driverRetry = d } }
