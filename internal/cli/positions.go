package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/checkpoint"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/internal/statelock"
	"github.com/kisflow-go/kisflow/stream"
)

func positionsCmd(reg *kisflow.Registry) *cobra.Command {
	var state string
	cmd := &cobra.Command{
		Use:   "positions DIR",
		Short: "Show each flow's committed position, its source's head and the lag",
		Long: "For every flow of DIR with a stream block, print its committed position and\n" +
			"where it is kept (the checkpoint store in the state folder, an exactly-once\n" +
			"sink's table, or the source's own: a Kafka consumer group), the source's head\n" +
			"(the position after its last message) and the lag between them.\n" +
			"`kisflow positions set DIR FLOW` moves a flow's position.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return listPositions(cmd.Context(), reg, args[0], state, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.PersistentFlags().StringVar(&state, "state", "", "the state folder (default DIR/.kisflow)")
	var to, at string
	var earliest, latest, truncate bool
	set := &cobra.Command{
		Use:   "set DIR FLOW (--to P | --time T | --earliest | --latest)",
		Short: "Move a flow's committed position (not while it runs)",
		Long: "Move the committed position of FLOW: to a position of its source's form\n" +
			"(--to), to the first message at or after a time (--time, RFC 3339 or a date),\n" +
			"to the oldest message (--earliest) or past the newest (--latest). The next\n" +
			"run starts there. Refused while a run holds the flow (the state folder's lock,\n" +
			"a consumer group with members). With an exactly-once sink the position and\n" +
			"the sink's record of consumed messages move in one transaction, so that the\n" +
			"messages read again are written again, once each; what the sink holds from\n" +
			"before stays, unless --truncate deletes the sink's rows in that transaction.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var b stream.Bound
			n := 0
			if to != "" {
				b, n = stream.Bound{Kind: stream.AtPosition, Position: to}, n+1
			}
			if at != "" {
				t, err := config.ParseBoundTime(at)
				if err != nil {
					return &exitError{code: ExitUsage, err: fmt.Errorf("--time: %w", err)}
				}
				b, n = stream.Bound{Kind: stream.AtTime, Time: t}, n+1
			}
			if earliest {
				b, n = stream.Bound{Kind: stream.Earliest}, n+1
			}
			if latest {
				b, n = stream.Bound{Kind: stream.Latest}, n+1
			}
			if n != 1 {
				return &exitError{code: ExitUsage, err: errors.New("name one of --to P, --time T, --earliest or --latest")}
			}
			return setPosition(cmd.Context(), reg, args[0], state, args[1], b, truncate, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	set.Flags().StringVar(&to, "to", "", "a position of the source's form (a file's byte offset; Kafka's 0:120,1:98)")
	set.Flags().StringVar(&at, "time", "", "the first message at or after this time (RFC 3339, or a date)")
	set.Flags().BoolVar(&earliest, "earliest", false, "the oldest message the source holds")
	set.Flags().BoolVar(&latest, "latest", false, "past the newest message the source holds")
	set.Flags().BoolVar(&truncate, "truncate", false, "with an exactly-once sink that supports it: delete the sink's rows in the same transaction")
	cmd.AddCommand(set)
	return cmd
}

// flowPosition is what positions needs of one flow.
type flowPosition struct {
	flow, source string
	key          string
	opts         stream.SourceOptions
	resumable    bool
	positioner   stream.Positioner
	tx           stream.TxSink // the exactly-once sink, if any
	sinkName     string
	// other is the sink's transactions when the flow runs at-least-once
	// into a sink that could run it exactly-once: where a run of the
	// other delivery kept the position.
	other stream.TxSink
}

func positionOf(ctx context.Context, eng *kisflow.Engine, set *config.Set, name string) (*flowPosition, error) {
	st := set.Flows[name].Stream
	sc, err := eng.Connector(ctx, st.Source)
	if err != nil {
		return nil, err
	}
	fp := &flowPosition{flow: name, source: st.Source, key: kisflow.StateKey(name, set.Conns[st.Source], sc.Driver())}
	fp.opts = stream.SourceOptions{Name: name, StateKey: fp.key}
	if r, ok := sc.Driver().(stream.Resumable); ok {
		fp.resumable = r.Resumable()
	}
	fp.positioner, _ = sc.Driver().(stream.Positioner)
	if st.Delivery == config.ExactlyOnce && st.Sink != "" && st.Sink != st.Source {
		// (A source that is its own sink, Kafka to Kafka in transactions,
		// keeps the position alone: its consumer group's offsets.)
		c, err := eng.Connector(ctx, st.Sink)
		if err != nil {
			return nil, err
		}
		fp.tx, _ = c.Driver().(stream.TxSink)
		fp.sinkName = st.Sink
	} else if st.Sink != "" && st.Sink != st.Source {
		c, err := eng.Connector(ctx, st.Sink)
		if err != nil {
			return nil, err
		}
		fp.other, _ = c.Driver().(stream.TxSink)
		fp.sinkName = st.Sink
	}
	return fp, nil
}

func openForPositions(ctx context.Context, reg *kisflow.Registry, dir, state string, stderr io.Writer) (*config.Set, *kisflow.Engine, func(), string, error) {
	set, err := loadConfig(reg, dir, stderr)
	if err != nil {
		return nil, nil, nil, "", err
	}
	red := set.Redactor()
	log := slog.New(slog.NewTextHandler(&lockedWriter{w: stderr, red: red}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// positions reads and sets positions while a run may hold the
	// admin address: it starts no admin server.
	eng, closeEngine, err := openEngine(ctx, reg, withoutAdmin(set), log, red)
	if err != nil {
		return nil, nil, nil, "", err
	}
	if state == "" {
		state = filepath.Join(dir, kisflow.DefaultStateDir)
	}
	return set, eng, closeEngine, state, nil
}

func listPositions(ctx context.Context, reg *kisflow.Registry, dir, state string, stdout, stderr io.Writer) error {
	set, eng, closeEngine, state, err := openForPositions(ctx, reg, dir, state, stderr)
	if err != nil {
		return err
	}
	defer closeEngine()
	red := set.Redactor()
	var store *checkpoint.Store
	defer func() {
		if store != nil {
			store.Close()
		}
	}()
	tw := tabwriter.NewWriter(stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "FLOW\tCOMMITTED\tKEPT IN\tHEAD\tLAG")
	failed := false
	for _, name := range set.FlowNames() {
		if set.Flows[name].Stream == nil {
			continue
		}
		row, err := func() ([]string, error) {
			fp, err := positionOf(ctx, eng, set, name)
			if err != nil {
				return nil, err
			}
			committed, where := "", ""
			switch {
			case fp.tx != nil && (fp.resumable || fp.positioner == nil):
				committed, err = fp.tx.Position(ctx, fp.key)
				where = "sink " + fp.sinkName
			case fp.resumable:
				if store == nil {
					if store, err = checkpoint.OpenSQLite(ctx, filepath.Join(state, "checkpoints.db")); err != nil {
						return nil, err
					}
				}
				committed, err = store.Position(ctx, fp.key)
				where = "checkpoints " + filepath.Join(state, "checkpoints.db")
			}
			if err != nil {
				return nil, err
			}
			from := committed // where the next run starts
			if fp.resumable {
				// After a change of stream.delivery, the next run takes
				// over the position the other delivery kept.
				var taken string
				if where, taken, err = fp.takenOver(ctx, state, committed, where); err != nil {
					return nil, err
				} else if taken != "" {
					from = taken
				}
			}
			head, lag := "?", "?"
			if fp.positioner != nil {
				p, err := fp.positioner.Positions(ctx, fp.opts, from)
				if err != nil {
					return nil, err
				}
				if !fp.resumable {
					committed, where = p.Committed, p.Where
					if _, ok := fp.tx.(stream.PositionMover); ok {
						where += " (inbox in sink " + fp.sinkName + ")"
					}
				}
				if p.Head != "" {
					head = p.Head
				}
				if p.Lag >= 0 {
					lag = fmt.Sprintf("%d %s", p.Lag, p.Unit)
				}
			} else if where == "" {
				where = "the source (no positions)"
			}
			if committed == "" {
				committed = "none"
			}
			return []string{name, committed, where, head, lag}, nil
		}()
		if err != nil {
			fmt.Fprintf(stderr, "flow %s: %s\n", name, red.Redact(err.Error()))
			failed = true
			continue
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	tw.Flush()
	if failed {
		return &exitError{code: ExitProblem}
	}
	return nil
}

// takenOver returns where, with the position that the next run takes
// over from the store of the flow's other delivery (see
// kisflow.TakesOver) when there is one, and that position ("" for none);
// committed is the position in the store of its delivery.
func (fp *flowPosition) takenOver(ctx context.Context, state, committed, where string) (string, string, error) {
	var other interface {
		Position(ctx context.Context, stream string) (string, error)
	}
	from, was := "sink "+fp.sinkName, "exactly-once"
	var here any = fp.tx
	switch {
	case fp.tx != nil:
		path := filepath.Join(state, "checkpoints.db")
		if _, err := os.Stat(path); err != nil {
			return where, "", nil
		}
		store, err := checkpoint.OpenSQLite(ctx, path)
		if err != nil {
			return "", "", err
		}
		defer store.Close()
		other, from, was = store, "checkpoints "+path, "at-least-once"
	case fp.other != nil:
		other = fp.other
		path := filepath.Join(state, "checkpoints.db")
		if _, err := os.Stat(path); err == nil && committed != "" {
			store, err := checkpoint.OpenSQLite(ctx, path)
			if err != nil {
				return "", "", err
			}
			defer store.Close()
			here = store
		}
	default:
		return where, "", nil
	}
	pos, err := other.Position(ctx, fp.key)
	if err != nil {
		return "", "", err
	}
	if !kisflow.TakesOver(committed, kisflow.PositionTime(ctx, here, fp.key), pos, kisflow.PositionTime(ctx, other, fp.key)) {
		return where, "", nil
	}
	return fmt.Sprintf("%s (the next run takes over %s from %s, where %s delivery kept it)", where, pos, from, was), pos, nil
}

func setPosition(ctx context.Context, reg *kisflow.Registry, dir, state, flow string, to stream.Bound, truncate bool, stdout, stderr io.Writer) error {
	set, eng, closeEngine, state, err := openForPositions(ctx, reg, dir, state, stderr)
	if err != nil {
		return err
	}
	defer closeEngine()
	red := set.Redactor()
	fail := func(err error) error {
		return &exitError{code: ExitProblem, err: red.Error(fmt.Errorf("flow %s: %w", flow, err))}
	}
	fl := set.Flows[flow]
	if fl == nil || fl.Stream == nil {
		return &exitError{code: ExitUsage, err: fmt.Errorf("%s: no flow %q with a stream block", dir, flow)}
	}
	fp, err := positionOf(ctx, eng, set, flow)
	if err != nil {
		return fail(err)
	}
	if fp.positioner == nil {
		return fail(fmt.Errorf("source %q cannot tell or move its position", fp.source))
	}
	mover, _ := fp.tx.(stream.PositionMover)
	switch {
	case fp.tx != nil && mover == nil:
		return fail(fmt.Errorf("exactly-once sink %q cannot move a position with its record of consumed messages", fp.sinkName))
	case truncate && mover == nil:
		return fail(errors.New("--truncate needs an exactly-once sink that supports it (the SQL sinks)"))
	}
	// The flow's lock in the state folder: a run from a file, a generator
	// or an SQL poller holds it (a consumer group refuses by its members).
	lock, err := statelock.Acquire(filepath.Join(state, "locks", flow+".lock"), "kisflow positions set of flow "+flow)
	if err != nil {
		return fail(fmt.Errorf("a run holds the flow: %w", err))
	}
	defer lock.Release()
	var from string
	var store *checkpoint.Store
	switch {
	case fp.tx != nil:
		if from, err = fp.tx.Position(ctx, fp.key); err != nil {
			return fail(err)
		}
	case fp.resumable:
		if store, err = checkpoint.OpenSQLite(ctx, filepath.Join(state, "checkpoints.db")); err != nil {
			return fail(err)
		}
		defer store.Close()
		if from, err = store.Position(ctx, fp.key); err != nil {
			return fail(err)
		}
	}
	was := from
	if !fp.resumable {
		// The source keeps its own position (a consumer group): say
		// where it was, as kisflow positions shows it.
		p, err := fp.positioner.Positions(ctx, fp.opts, from)
		if err != nil {
			return fail(err)
		}
		was = p.Committed
	}
	pos, err := fp.positioner.SeekPosition(ctx, fp.opts, to)
	if errors.Is(err, stream.ErrBadPosition) {
		return &exitError{code: ExitUsage, err: red.Error(fmt.Errorf("flow %s: %w", flow, err))}
	}
	if err != nil {
		return fail(err)
	}
	where := ""
	switch {
	case mover != nil:
		keep := ""
		if fp.resumable {
			keep = pos
		}
		if err := mover.MovePosition(ctx, fp.key, from, keep, truncate); err != nil {
			return fail(err)
		}
		where = "sink " + fp.sinkName + " (its record of consumed messages forgotten"
		if truncate {
			where += ", its rows deleted"
		}
		where += ")"
		if !fp.resumable {
			where = "the source's own (" + pos + "); " + where
		}
	case fp.resumable:
		if err := store.SavePosition(ctx, fp.key, pos); err != nil {
			return fail(err)
		}
		where = "checkpoints " + filepath.Join(state, "checkpoints.db")
	default:
		where = "the source's own"
	}
	show := was
	if show == "" {
		show = "none"
	}
	fmt.Fprintf(stdout, "flow %s: position moved from %s to %s (%s); the next run starts there\n", flow, show, pos, where)
	return nil
}
