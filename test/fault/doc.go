// Package fault is KisFlow's fault suite: tests that build the kisflow
// binary and drive it as users do, with YAML flows, against real services
// and private service processes started on their own ports, under the
// faults that threaten each guarantee the README states (SIGKILL, a broker
// restarted, a cut connection, poison rows, a row a sink rejects, a sink
// file deleted, a full disk, abusive HTTP clients). Each test checks the
// invariants with counts: every id once, or at least once, and every dead
// letter once.
//
// The package holds no code of its own; `go test ./test/fault` runs it,
// and `-short` keeps a quick subset.
package fault
