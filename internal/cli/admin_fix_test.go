package cli

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// passFunc is a function Pass that marks each row seen.
const passFunc = "kistype: func\nfname: Pass\nfmode: Calculate\ncalc: {seen: true}\n---\n"

// A flow whose connector is down at start-up waits on its own: the other
// flow runs meanwhile, and the admin API shows the first one waiting for
// the connector. It used to hold every flow and the console until it
// connected.
func TestFlowWaitingForItsConnectorDoesNotHoldTheOthers(t *testing.T) {
	t.Parallel()
	dir, addr := waitingDir(t)
	_, done := childWith(t, dir)
	c := apiClient{t: t, base: "http://" + addr}
	waitAPI(t, c, done)
	waitFor(t, "flow L to commit rows while PG waits", 30*time.Second, func() bool {
		return c.flow("L").Stats.Committed > 0
	})
	// A waiting flow can be stopped (it was refused with 409 "waiting,
	// not running") and started again, waiting again.
	stopStartWaiting(t, c, quickAPI(t, c))
	if l := c.flow("L"); l.Status != "running" {
		t.Fatalf("flow L is %s, want running", l.Status)
	}
}

// A line of the dead-letter file that is not a letter (cut short by a
// crash) is listed as unreadable, and a replay keeps it apart instead of
// moving it to the replayed letters; a replay with no letters names no
// replayed file.
func TestReplayKeepsUnreadableDeadLetterLines(t *testing.T) {
	t.Parallel()
	dir, base := adminDir(t, 50)
	_, done := childWith(t, dir)
	c := apiClient{t: t, base: base}
	waitAPI(t, c, done)
	for _, f := range []string{"Gen", "Other"} {
		if code := c.do("POST", "/api/flows/"+f+"/stop", nil); code != 200 {
			t.Fatalf("POST /api/flows/%s/stop: %d", f, code)
		}
	}
	letters := filepath.Join(dir, "state", "dead-letter")
	if err := os.MkdirAll(letters, 0o755); err != nil {
		t.Fatal(err)
	}
	good := `{"letter_id":"x1","flow":"Gen","func":"Gate","error":"gate closed","attempts":1,"payload":{"id":1000001},"time":"2026-01-01T00:00:00Z"}`
	cut := `{"letter_id":"x2","flow":"Gen","func":"Gate","error":"gate cl`
	if err := os.WriteFile(filepath.Join(letters, "Gen.jsonl"), []byte(good+"\n"+cut+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var list struct {
		Total      int `json:"total"`
		Unreadable []struct {
			Line int    `json:"line"`
			Text string `json:"text"`
		} `json:"unreadable"`
	}
	if code := c.do("GET", "/api/flows/Gen/dead-letters", &list); code != 200 || list.Total != 1 || len(list.Unreadable) != 1 || list.Unreadable[0].Line != 2 || list.Unreadable[0].Text != cut {
		t.Fatalf("GET dead-letters: %d %+v, want 1 letter and line 2 unreadable", code, list)
	}
	var rep struct {
		Replayed       int     `json:"replayed"`
		Unreadable     int     `json:"unreadable"`
		UnreadableFile string  `json:"unreadable_file"`
		ReplayedFile   *string `json:"replayed_file"`
	}
	if code := c.do("POST", "/api/flows/Gen/dead-letters/replay", &rep); code != 200 || rep.Replayed != 1 || rep.Unreadable != 1 {
		t.Fatalf("replay: %d %+v, want 1 replayed and 1 unreadable", code, rep)
	}
	replayed, err := os.ReadFile(filepath.Join(letters, "Gen.replayed.jsonl"))
	if err != nil || string(replayed) != good+"\n" {
		t.Fatalf("Gen.replayed.jsonl holds %q (%v), want the one letter only", replayed, err)
	}
	kept, err := os.ReadFile(rep.UnreadableFile)
	if err != nil || string(kept) != cut+"\n" {
		t.Fatalf("the unreadable line is not kept in %q: %q (%v)", rep.UnreadableFile, kept, err)
	}
	rep.ReplayedFile = nil
	if code := c.do("POST", "/api/flows/Other/dead-letters/replay", &rep); code != 200 || rep.Replayed != 0 || rep.ReplayedFile != nil {
		t.Fatalf("a replay with no letters: %d, replayed %d, replayed_file %v; want none named", code, rep.Replayed, rep.ReplayedFile)
	}
}

// The admin API takes the bearer scheme in any case (RFC 7235), and the
// token alone still decides.
func TestAdminAPITakesTheBearerSchemeInAnyCase(t *testing.T) {
	t.Parallel()
	dir, base := adminDir(t, 50)
	_, done := childWith(t, dir, "KISFLOW_ADMIN_TOKEN=s3cret")
	waitAPI(t, apiClient{t: t, base: base, token: "s3cret"}, done)
	for header, want := range map[string]int{"bearer s3cret": 200, "BEARER s3cret": 200, "Bearer s3cret": 200, "bearer wrong": 401, "Basic s3cret": 401, "s3cret": 401} {
		req, err := http.NewRequest("GET", base+"/api/flows", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", header)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Authorization: %s: %d, want %d", header, resp.StatusCode, want)
		}
	}
}

// The warning about an admin server beyond localhost without a token is
// readable: the redaction of secrets does not take its words for one.
func TestAdminWarningBeyondLocalhostIsNotRedacted(t *testing.T) {
	t.Parallel()
	bin := stockKisflow(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"global.yml": fmt.Sprintf("kistype: global\nplugins:\n  metrics:\n    admin: {listen: \"0.0.0.0:%d\"}\n", closedPort(t)),
		"all.yml":    srcOut("in.jsonl", "discard") + passFunc + oneStepFlow("F", "Pass", "src", "out"),
		"in.jsonl":   "{\"id\":1}\n",
	})
	out, err := exec.Command(bin, "run", dir, "--state", filepath.Join(dir, "state"), "--progress", "never", "--log-level", "warn").CombinedOutput()
	if err != nil {
		t.Fatalf("kisflow run: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "no bearer token is set, so anyone who reaches 0.0.0.0:") || strings.Contains(string(out), "xxxxx") {
		t.Fatalf("the warning is missing or redacted:\n%s", out)
	}
}
