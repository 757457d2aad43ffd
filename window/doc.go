// Package window computes windowed aggregations over rows: tumbling,
// sliding and session windows in event time (or processing time), grouped
// by fields, with a watermark, allowed lateness and a policy for late rows.
//
// It is the pure computation, with no dependency on the engine: an
// [Operator] takes rows (map[string]any, as decoded from JSON), and returns
// the rows of the windows they closed and the rows it rejected. The runtime
// feeds it batches, dead-letters the rejected rows, and commits with each
// batch the window-groups the batch changed ([Operator.ChangesByWindow]),
// written together as keyed state entries that it loads back into an
// operator with [Operator.SetClock] and [Operator.LoadGroupTagged] (the
// group's identity read first with [GroupOf]). [Operator.Snapshot] encodes
// the whole state at once.
//
// # Windows
//
// Windows are [start, end) in milliseconds of UTC. Tumbling windows of size
// S are aligned to the Unix epoch: [k·S, (k+1)·S). Sliding windows of size S
// every D start at every multiple of D and last S, so a row belongs to up to
// ⌈S/D⌉ windows. A session window of gap G starts at a group's row and ends
// G after the last row of the group that followed within G; sessions that
// come to overlap (an out-of-order row bridging two) merge.
//
// # Event time and the watermark
//
// With a time field, a row's time is that field: an RFC 3339 string, or a
// number (or a string of digits) of milliseconds since the Unix epoch.
// Without one, it is the time of the clock when the row is added
// (processing time). The watermark is the largest time seen minus the
// allowed lateness; a window closes, and emits one row per group, when the
// watermark reaches its end. [Operator.Flush] closes every window (the end
// of a bounded source); [Operator.Tick] advances processing time when no
// rows come. A row whose event time is more than [Spec.MaxAhead] (default
// [DefaultMaxAhead], a day) ahead of the clock is rejected with an error
// that wraps [ErrAhead] and does not move the watermark: one mistyped
// timestamp cannot close every window.
//
// # Late rows
//
// A row is late when every window it belongs to has closed (for sessions:
// when its own window [t, t+gap) has closed and it joins no open session).
// A row that belongs to open windows as well as closed ones (sliding) is
// added to the open ones only. Late rows follow the policy:
//
//   - drop: they are ignored.
//   - dead_letter (the default): they are returned as rejected, with an
//     error that wraps [ErrLate].
//   - update: a closed window's state is kept for one more lateness (until
//     the watermark reaches end + lateness); a late row for it updates it
//     and the corrected row of its group is emitted again at the end of the
//     batch. A row later than that is rejected with [ErrTooLate]. A late
//     row of a session merges into the kept sessions it overlaps; the
//     corrected session is emitted, and rows emitted before for the sessions
//     it absorbed are superseded (their window_start differs). So does a
//     row on time that falls within the gap of a kept session: the session
//     absorbs it (and any open session the row reaches) rather than a
//     second, overlapping session starting; when its end is then past the
//     watermark it is open again and its corrected row comes when it
//     closes.
//
// # Output rows
//
// Each row holds the group_by fields, window_start and window_end (RFC 3339,
// UTC) and one field per aggregate: count and count_distinct are int64;
// sum, avg, max and min are float64. Aggregates ignore null and missing
// values, as SQL does: sum of none is 0, avg, max and min of none are nil.
// A value that is not a number (for sum, avg, max, min) is an error for its
// row: the row is rejected and changes nothing. Group values are written in
// a canonical form: whole numbers as int64 (1.0, 1 and json.Number "1" are
// one group), other numbers as float64, strings, booleans and nil as they
// are.
//
// # Memory
//
// State is held for open windows only, plus, under late: update, closed
// windows until the watermark reaches end + lateness; then it is freed.
// Each open window-group holds its group key and one accumulator per
// aggregate (count_distinct also holds its distinct values).
//
// An Operator is not safe for concurrent use.
package window
