//go:build race

package cli

// raceEnabled is true when the tests run under the race detector.
const raceEnabled = true
