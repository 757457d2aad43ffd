// Package kisflow is a streaming computation framework: business logic is
// written as small typed Go functions, chained into flows described in
// KisFlow-format YAML.
//
// A Registry holds the Go side (function bodies by name, connector drivers by
// type); a config.Set holds the YAML side; an Engine joins them and hands out
// Flow instances:
//
//	reg := kisflow.NewRegistry()
//	reg.MustRegister("AvgScore", kisflow.Func(AvgScore))
//	set, err := config.Import("conf")
//	eng, err := kisflow.NewEngine(reg, set)
//	fl, err := eng.Flow(ctx, "CalStuAvgScore")
//	fl.CommitRow(`{"stu_id":101,"score_1":100,"score_2":90,"score_3":80}`)
//	res, err := fl.Run(ctx)
//
// A run moves one batch layer by layer: each function reads the previous
// layer's rows and commits its own with Flow.CommitRow. Functions steer the
// run with actions (DataReuse, ForceEntryNext, JumpFunc, Abort). Rows arrive
// in the type a function asks for: rows that already are that type pass
// without copying, JSON text and maps are decoded, and rows that cannot be
// decoded come back as RowErrors while the rest go on.
//
// # Keyed state
//
// A Go function run by a Job keeps state per stream key with ValueState
// (one value per key) and MapState (a map per key), declared once by name
// and used through the function's Flow:
//
//	var visits = kisflow.NewValueState[int]("visits", kisflow.StateTTL(24*time.Hour))
//
//	func Count(ctx context.Context, f kisflow.Flow, rows []*Visit) error {
//		for _, v := range rows {
//			n, _, err := visits.Get(f, v.User)
//			if err != nil {
//				return err
//			}
//			if err := visits.Set(f, v.User, n+1); err != nil {
//				return err
//			}
//		}
//		return nil
//	}
//
// State changes commit with the batch that made them, exactly once:
//   - exactly-once delivery: in the sink's transaction, with the rows, the
//     position and the message IDs (the SQLite, PostgreSQL, MySQL and Redis
//     sinks, and the Kafka sink's changelog topic; a flow whose sink cannot
//     keep state ends with an error at its first change);
//   - at-least-once: in the checkpoint store's transaction (the SQLite
//     file checkpoints.db in the state folder) with the position, so that
//     a source with positions (a file, a generator, an SQL poller) replays
//     after a crash from the position its state belongs to. Like the
//     position, the entries changed since the last save are saved every
//     200ms or so, when the stream goes idle and when it stops; a save
//     that takes long is made less often, so that saving takes at most
//     about a fifth of the commit loop's time. A broker that
//     takes acknowledgements (Redis Streams, JetStream, RabbitMQ, MQTT,
//     Kafka) has no position there: the changes are saved before the
//     acknowledgement, and a crash between the two applies the redelivered
//     messages to the state again, as at-least-once delivery does to rows.
//     Use exactly-once delivery for state that must not count twice;
//   - at-most-once: saved when the batch commits; a crash loses the batch
//     and its changes together.
//
// A run that fails, a run retried, a message dead-lettered and a batch
// returned to its source (at shutdown) leave no change behind: only the
// runs whose rows are committed change the state.
//
// Reads see the committed state, then the changes of the batches still in
// flight before the function's own, then its own. Several workers run the
// rows of a key in order on one worker only when the stream has a key
// (stream.key, or keys its source sets): with workers > 1 a function may
// use only the state of the key its rows are routed by, and using another
// key is an error (ErrStateKey), as is using state with no stream key.
//
// Hot state lives in memory: a job loads all of its state when it starts,
// and writes only the entries its batches changed. State must fit in
// memory; larger state is not handled (a limit, not spilled to disk): a
// small entry (an int counter with a short key) takes about 300 bytes of
// heap, so a million keys take about 300 MB. Values are stored as JSON
// with the engine's Codec. An entry with a TTL expires that long after its
// last write: reads no longer see it, and it is removed from memory within
// about a minute and from the store when a job starts.
//
// Values are kept as they are given, without a copy: a value of a map,
// slice or pointer type must not be modified after Set, nor a value that
// Get returned; Set a new value instead.
package kisflow
