package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Delivery guarantees of a stream.
const (
	AtLeastOnce = "at-least-once"
	AtMostOnce  = "at-most-once"
	ExactlyOnce = "exactly-once"
)

// Stream binds a flow to a source: the optional `stream:` block of a flow
// document. Source, Sink and DeadLetter name connectors (`kistype: conn`)
// whose types offer those capabilities.
type Stream struct {
	// Source is the connector the flow reads from.
	Source string `yaml:"source"`
	// Sink receives the rows of the flow's last layer (optional).
	Sink string `yaml:"sink,omitempty"`
	// DeadLetter receives messages that failed after their retries. When
	// empty they go to a JSON lines file in the runner's state folder.
	DeadLetter string `yaml:"dead_letter,omitempty"`
	// BatchSize is the most messages per micro-batch (default 1000; 5000
	// from a change-data-capture source, see driver.Spec.BatchSize).
	BatchSize int `yaml:"batch_size,omitempty"`
	// Linger is how long a micro-batch waits to fill up (default 20ms).
	Linger Duration `yaml:"linger,omitempty"`
	// Workers is how many flow instances run batches in parallel (default 1).
	Workers int `yaml:"workers,omitempty"`
	// Key names the row field whose equal values are processed in order and
	// never concurrently (optional).
	Key string `yaml:"key,omitempty"`
	// Delivery is at-least-once (default), at-most-once or exactly-once.
	Delivery string `yaml:"delivery,omitempty"`
	// MaxInFlight bounds the micro-batches read but not yet committed
	// (default 2 × workers + 1).
	MaxInFlight int `yaml:"max_in_flight,omitempty"`
	// RetryTimes and RetryDuration (ms) apply to functions that set none
	// (defaults 3 and 100).
	RetryTimes    *int `yaml:"retry_times,omitempty"`
	RetryDuration int  `yaml:"retry_duration,omitempty"`
	// DrainTimeout bounds the shutdown drain (default 30s).
	DrainTimeout Duration `yaml:"drain_timeout,omitempty"`
	// CheckpointInterval is how often at most an at-least-once stream saves
	// its position, with the keyed state (and kept windows) changed since,
	// while batches keep coming (default 200ms). Longer writes a key that
	// changes often once per interval rather than after each batch; after
	// a crash, up to an interval more is read again.
	CheckpointInterval Duration `yaml:"checkpoint_interval,omitempty"`
	// MaxConsecutiveFailures stops the job with the failure when this many
	// messages in a row were dead-lettered by the same function with the
	// same error (default 100, or never for a source that answers each
	// request with its dead letters, such as http; -1 never stops).
	MaxConsecutiveFailures int `yaml:"max_consecutive_failures,omitempty"`
	// TimeField names the row field that holds a message's event time (an
	// RFC 3339 string or epoch milliseconds): the job then keeps the flow's
	// watermark, which fires event-time timers (optional).
	TimeField string `yaml:"time_field,omitempty"`
	// Lateness is how far the watermark stays behind the largest event
	// time seen (default 0).
	Lateness Duration `yaml:"lateness,omitempty"`
	// IdleTimeout is how long a source partition that delivers nothing
	// holds the watermark back (default 30s).
	IdleTimeout Duration `yaml:"idle_timeout,omitempty"`
	// Start is where each run of the flow starts reading: committed (the
	// default: the flow's committed position, else where the source
	// starts a new reader), earliest, latest, {position: P} or {time: T}.
	// Anything but committed ignores the committed position; `kisflow
	// positions set` moves it once instead.
	Start *Bound `yaml:"start,omitempty"`
	// Stop bounds each run: at_start (what the source held when the run
	// began), {position: P} or {time: T}. The run ends, with exit 0, when
	// every partition of the source reached it (optional: unbounded).
	Stop *Bound `yaml:"stop,omitempty"`
}

// Duration is a time.Duration written in YAML as "250ms", "2s", or a number
// of milliseconds.
type Duration time.Duration

// UnmarshalYAML reads "250ms"-style strings or integer milliseconds.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	s := strings.TrimSpace(n.Value)
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		*d = Duration(time.Duration(ms) * time.Millisecond)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: bad duration %q (want e.g. 250ms, 2s, or milliseconds)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string such as "250ms".
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }
