package kisflow

import (
	"time"

	"github.com/kisflow-go/kisflow/window"
)

// CheckSourceMust makes f check its first function's source.must, as the
// instances of a Job do, so that tests can run the check through Run.
func CheckSourceMust(f Flow) { f.(*flow).checkMust = true }

// WithDriverRetryAfter sets how long Connector.Driver waits after a failed
// start before trying again, so that a test does not depend on timing.
func WithDriverRetryAfter(d time.Duration) Option { return func(e *Engine) { e.driverRetry = d } }

// WindowDeltaGroups returns the window-groups (window ends, 0 for sessions,
// and group keys) and the number of tombstones of a window delta's value.
func WindowDeltaGroups(v []byte) (groups []window.Group, tombs int, err error) {
	err = readDelta(v, func(kind byte, data []byte, _ int64) error {
		if kind != recGroup {
			tombs++
			return nil
		}
		g, err := window.GroupOf(data)
		groups = append(groups, g)
		return err
	})
	return groups, tombs, err
}
