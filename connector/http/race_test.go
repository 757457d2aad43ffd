//go:build race

package http

// raceEnabled: the race detector multiplies memory use, so RSS bounds do
// not apply.
const raceEnabled = true
