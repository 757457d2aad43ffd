package kisflow

// Action is what a function asks of the flow through Flow.Next, as in
// KisFlow: f.Next(kisflow.DataReuse) or f.Next(kisflow.JumpFunc("Name")).
type Action func(*Actions)

// Actions is the set of requests a function made for its step.
type Actions struct {
	// DataReuse: the next function reads this function's input instead of
	// the rows it committed.
	DataReuse bool
	// ForceEntryNext: the next function runs even if this one committed no
	// rows; the rows it did commit are kept.
	ForceEntryNext bool
	// JumpFunc: this function of the flow runs next, over the output of the
	// function before it (the flow's input for the first function). A run
	// that jumps more than the engine's bound (default 1000) fails.
	JumpFunc string
	// Abort: the run ends after this function; its rows are the result.
	// Abort wins over every other action.
	Abort bool
}

// DataReuse makes the next function read this function's input.
func DataReuse(a *Actions) { a.DataReuse = true }

// ForceEntryNext makes the next function run even if no rows were committed.
func ForceEntryNext(a *Actions) { a.ForceEntryNext = true }

// Abort ends the run after this function.
func Abort(a *Actions) { a.Abort = true }

// JumpFunc makes the named function of the flow run next.
func JumpFunc(name string) Action {
	return func(a *Actions) { a.JumpFunc = name }
}
