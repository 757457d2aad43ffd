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
package kisflow
