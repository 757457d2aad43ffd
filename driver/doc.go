// Package driver is what a connector author imports to add a connector
// type: the Driver interface and its Factory, the Spec that declares the
// type's params once (it decodes them into a typed struct, and lint, `kisflow
// list` and the README's parameter tables are made from it), and the one
// grammar of durations, sizes and booleans every param shares.
//
// A connector package declares its params as a struct, builds its Spec
// from it, and registers both:
//
//	type params struct {
//		Mode    string        `param:"mode" default:"hash" enum:"hash|string" doc:"how rows are stored"`
//		Timeout time.Duration `param:"timeout" default:"5s" min:"1ms" doc:"every network call"`
//	}
//
//	var Spec = driver.MustSpec[params]("redis", "Redis hashes, strings, lists and streams")
//
//	func Install(reg driver.Registrar) error { return reg.RegisterConnector(Spec, New) }
//
//	func New(cfg *config.Conn) (driver.Driver, error) {
//		var p params
//		if err := Spec.Decode(cfg, &p); err != nil {
//			return nil, err
//		}
//		...
//	}
//
// # Capabilities
//
// A driver is a Driver (Start, Close). What else it can do it says by
// implementing these interfaces; the engine finds them by type assertion:
//
//   - stream.SourceDriver (OpenSource): it feeds a flow's stream with a
//     stream.Source. Optional extras of a source: stream.Nacker (give
//     messages back at once), stream.DeadLetterNotifier (told which messages
//     went to the dead-letter sink before they are acknowledged),
//     stream.Sizer (progress of a bounded source), stream.PositionCommitter
//     (told each position once it is committed, to acknowledge it to its
//     server), a Lag(ctx) (int64, error) method (kisflow_source_lag),
//     stream.PartitionOwner (partitions that move between the processes of
//     a group: keyed state follows them).
//   - stream.Seeker (Seeks): the source starts elsewhere than its committed
//     position and stops at a position (a flow's stream.start and
//     stream.stop, kisflow run --from/--until); it says which kinds it can
//     do, and lint refuses the others. Opened with SourceOptions.Stop, its
//     Read returns io.EOF once every partition reached the stop.
//   - stream.Positioner (Positions, SeekPosition): kisflow positions tells
//     the source's head and lag (and the committed position of a source
//     that keeps its own, a consumer group), and positions set moves it.
//   - stream.Sink: it is a flow's sink and serves Save functions (Write).
//   - stream.TxSink: an exactly-once sink: rows, position and consumed
//     message IDs commit in one transaction (CommitBatch, Position, Seen);
//     with stream.SerialCommitter when a commit covers everything read.
//     Keyed state commits in it with stream.StateSink (and loads by
//     partition with stream.PartitionStateLoader). With
//     stream.PositionMover, kisflow positions set moves the stream's
//     position and forgets its consumed IDs in one transaction.
//   - kisflow.Caller: the default for Connector.Call (Load functions).
//   - kisflow.PluginUser: it uses plugins, such as a shared client (see the
//     redis, nats and sql packages).
//   - Identifier (Identity): a source named by what it reads rather than
//     by its config (a file by its folder's device and inode), for the key
//     of a flow's position (kisflow.StateKey).
//   - Invoker (Invoke): a type whose functions run in other processes
//     (Spec.Remote): a function naming such a connector has no local body,
//     and each of its calls is Invoke (the remote connector type).
//   - kisflow.MetricsUser (UseMetrics): it registers collectors of its own
//     on the engine's Prometheus registry.
//   - kisflow.LoggerUser (UseLogger): it logs through the engine's logger
//     (the command's format, level and redaction) instead of slog.Default.
//   - kisflow.Checker (Check): for `kisflow dry-run`, after Start, it checks
//     that what the flows use it for exists or can be created (a table, a
//     stream, a topic, a queue, a file, a listen address), without reading
//     or writing a message.
//
// Messages a driver's errors carry decide what the runtime does: an error
// marked stream.Fatal (a configuration error: bad credentials, a wrong type)
// ends the job; stream.Permanent (this row can never be written) sends the
// row to the dead-letter sink; any other error is an outage, retried with
// capped backoff for as long as it takes.
package driver
