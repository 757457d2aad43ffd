package fault

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestHTTPBodyOverBudgetByRows: with the default params, a body of 300,000
// JSON lines (6.6 MB, within max_body) whose rows' overhead takes it over the
// 64 MiB in-flight budget is accepted at once by an idle server, and every
// row written once; it was refused with 429 for ever, so a client honouring
// Retry-After looped.
func TestHTTPBodyOverBudgetByRows(t *testing.T) {
	t.Parallel()
	if raceEnabled {
		// 300,000 rows through a race-built binary beside the other
		// parallel tests took over 90 s on the two-core CI machine and
		// failed there twice in five runs; the budget is checked by the
		// suite without the race detector.
		t.Skip("300,000 rows are too slow under the race detector")
	}
	// httpIngest's folder with the http source's params dropped: the
	// defaults.
	dir := httpIngest(t)
	conns := filepath.Join(dir, "conns.yml")
	b, err := os.ReadFile(conns)
	if err != nil {
		t.Fatal(err)
	}
	own := "params:\n  read_timeout: 5s\n  max_body: \"262144\"\n  max_in_flight_bytes: \"4194304\"\n"
	if !strings.Contains(string(b), own) {
		t.Fatalf("httpIngest's conns.yml no longer has the params this test drops:\n%s", b)
	}
	// Only the time the rows may take is set: under the race detector the
	// binary needs more than the default minute for 300,000 rows.
	if err := os.WriteFile(conns, []byte(strings.Replace(string(b), own, "params:\n  timeout: 10m\n", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	p := Start(t, dir, nil, "run", dir, "--state", filepath.Join(dir, "state"), "--progress", "never", "--log-level", "info")
	p.WaitFor("http source listening", time.Minute)
	m := regexp.MustCompile(`addr=(127\.0\.0\.1:\d+)`).FindStringSubmatch(p.Output())
	if m == nil {
		t.Fatalf("no address in the log:\n%s", p.Output())
	}
	const rows = 300_000
	body := IDLines(rows, func(i int) string { return fmt.Sprintf(`{"id":%d,"qty":1}`, i) })
	client := &http.Client{Timeout: 10 * time.Minute}
	resp, err := client.Post("http://"+m[1]+"/ingest", "application/x-ndjson", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf(`{"accepted":%d}`, rows); resp.StatusCode != 200 || strings.TrimSpace(string(answer)) != want {
		t.Fatalf("%d %.200s (Retry-After %q), want 200 %s", resp.StatusCode, answer, resp.Header.Get("Retry-After"), want)
	}
	if bad := Check(SQLiteCounts(t, filepath.Join(dir, "out.db"), "SELECT id FROM out"), rows, true); len(bad) > 0 {
		t.Fatalf("rows written: %v", bad)
	}
}
