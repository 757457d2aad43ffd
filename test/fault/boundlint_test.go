package fault

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Issue 14 (adversarial review), item 5: start and stop values lint
// passed and the run then failed on or silently ignored. A file's
// positions not of its form, and a stop not after the start (a run that
// would read nothing, exit 0, no warning), are errors of lint and run at
// their line; a misspelt word gets a "did you mean"; each key lists only
// its own words (stop: none is told to leave stop out).
func TestStartStopValuesAreChecked(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ name, extra, want, not string }{
		{"start not an offset", "  start: {position: abc}\n", `flow.yml:9: flow "Ids": source "in" (type file): stream.start: bad position "abc": not a byte offset of 0 or more`, ""},
		{"negative stop", "  stop: {position: -1}\n", `flow.yml:9: flow "Ids": source "in" (type file): stream.stop: bad position "-1": not a byte offset of 0 or more`, ""},
		{"stop before start", "  start: {position: 40}\n  stop: {position: 20}\n", `flow.yml:10: flow "Ids": source "in" (type file): stream.stop: stop {position: 20} is not after start {position: 40}: the run would read nothing`, ""},
		{"misspelt start", "  start: earlist\n", `flow.yml:9: flow "Ids": stream start: "earlist" is not a position (want earliest, latest, committed, {position: P} or {time: T}); did you mean earliest?`, "at_start"},
		{"stop none", "  stop: none\n", `flow.yml:9: flow "Ids": stream stop: "none" is not a position (want at_start, {position: P} or {time: T}; leave stop out for an unbounded run)`, "earliest"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := fileFlow(t, c.extra, "")
			refusedByLintAndRun(t, dir, c.want)
			if c.not != "" {
				if lint := Run(t, dir, time.Minute, "lint", dir); strings.Contains(lint.Stdout, c.not) {
					t.Errorf("lint lists %s, a value of the other key:\n%s", c.not, lint.Stdout)
				}
			}
		})
	}
}

// A one-off run whose --until is not after its --from is refused (it read
// nothing and exited 0); a bounded run with no committed position says so.
func TestBoundedRunSaysWhereItStarts(t *testing.T) {
	t.Parallel()
	dir := fileFlow(t, "  stop: at_start\n", "")
	state := filepath.Join(dir, "state")
	res := Run(t, dir, time.Minute, "run", dir, "--state", state, "--progress", "never", "--from", "40", "--until", "20")
	if want := "stop {position: 20} is not after start {position: 40}: the run would read nothing"; res.Code == 0 || !strings.Contains(res.Stdout+res.Stderr, want) {
		t.Fatalf("run --from 40 --until 20: exit %d, want an error with %q\n%s%s", res.Code, want, res.Stdout, res.Stderr)
	}
	res = Run(t, dir, time.Minute, "run", dir, "--state", state, "--progress", "never")
	if want := "flow Ids: no committed position: reading from the start; stopping at at_start"; res.Code != 0 || !strings.Contains(res.Stdout, want) {
		t.Fatalf("run: exit %d, want 0 with %q\n%s%s", res.Code, want, res.Stdout, res.Stderr)
	}
}
