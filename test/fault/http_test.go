package fault

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// httpIngest is a config folder: an http source (read_timeout 5s, max_body
// 256 KiB, an in-flight budget of 4 MiB) -> a calc that fails on a text qty
// -> an SQLite table out(id, twice).
func httpIngest(t testing.TB) string {
	t.Helper()
	return Dir(t, map[string]string{
		"flow.yml": `kistype: flow
status: 1
flow_name: Ingest
flows:
  - fname: Double
stream:
  source: api
  sink: db
  linger: 5ms
  retry_times: 0
`,
		"funcs.yml": `kistype: func
fname: Double
fmode: Calculate
calc:
  twice: qty * 2
keep: [id, twice]
`,
		"conns.yml": `kistype: conn
cname: api
type: http
addrs: 127.0.0.1:0
key: /ingest
params:
  read_timeout: 5s
  max_body: "262144"
  max_in_flight_bytes: "4194304"
---
kistype: conn
cname: db
type: sqlite
key: out
params:
  path: out.db
  create: "true"
  columns: id,twice
`,
	})
}

// ingestClient posts to a running http source and keeps, per id, how the
// requests carrying it were answered.
type ingestClient struct {
	url string
	hc  *http.Client

	mu       sync.Mutex
	accepted map[int]int // id -> requests answered 200 or 422 with the id accepted
	unsure   map[int]int // id -> requests whose answer was lost
	rejected map[int]int // id -> requests refused whole (400, 413, 415)
	codes    map[int]int // status -> count
}

func newIngestClient(url string) *ingestClient {
	return &ingestClient{
		url:      url,
		hc:       &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 256, ExpectContinueTimeout: 10 * time.Second}},
		accepted: map[int]int{}, unsure: map[int]int{}, rejected: map[int]int{}, codes: map[int]int{},
	}
}

// post sends body with ids until it is answered with anything but 429 (or
// a 503 saying nothing was processed), and records the outcome. dead lists
// the positions in the request of rows expected to be dead-lettered.
func (c *ingestClient) post(t *testing.T, ctype string, ids []int, body string) (int, string) {
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequest(http.MethodPost, c.url, strings.NewReader(body))
		if err != nil {
			t.Error(err)
			return 0, ""
		}
		req.Header.Set("Content-Type", ctype)
		req.Header.Set("Expect", "100-continue")
		resp, err := c.hc.Do(req)
		if err != nil {
			c.record(-1, ids, nil)
			return -1, err.Error()
		}
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		retry := resp.StatusCode == 429 || resp.StatusCode == 503 && strings.Contains(string(answer), "nothing was processed")
		if retry && attempt < 600 {
			if resp.Header.Get("Retry-After") == "" {
				t.Errorf("%d without Retry-After", resp.StatusCode)
			}
			c.count(resp.StatusCode)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		c.record(resp.StatusCode, ids, answer)
		return resp.StatusCode, string(answer)
	}
}

func (c *ingestClient) count(code int) {
	c.mu.Lock()
	c.codes[code]++
	c.mu.Unlock()
}

var deadRowRE = regexp.MustCompile(`"row":(\d+)`)

func (c *ingestClient) record(code int, ids []int, answer []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.codes[code]++
	dead := map[int]bool{}
	for _, m := range deadRowRE.FindAllSubmatch(answer, -1) {
		var i int
		fmt.Sscan(string(m[1]), &i)
		dead[i] = true
	}
	for i, id := range ids {
		switch {
		case code == 200 || code == 422 && !dead[i]:
			c.accepted[id]++
		case code == 422:
		case code == 400 || code == 413 || code == 415:
			c.rejected[id]++
		default: // lost answers, 503 after processing, 504
			c.unsure[id]++
		}
	}
}

func idBody(ids []int, row func(id int) string) string {
	var b strings.Builder
	for _, id := range ids {
		b.WriteString(row(id))
		b.WriteByte('\n')
	}
	return b.String()
}

func idRange(from, n int) []int {
	ids := make([]int, n)
	for i := range ids {
		ids[i] = from + i
	}
	return ids
}

// TestHTTPAbuse drives `kisflow run` with an http source through abusive
// clients at once: 200 concurrent clients, bodies over max_body, bodies
// that together overflow the in-flight budget, slowloris connections,
// malformed JSON, a wrong Content-Type and poison rows. Every row of a
// request answered 200 (or accepted in a 422) is in the sink exactly once,
// no row of a refused request is, poison rows are dead-lettered once each,
// and slow connections are closed after read_timeout.
func TestHTTPAbuse(t *testing.T) {
	// Not parallel: 200 clients on a machine busy with the other fault
	// tests made honest clients slower than read_timeout.
	clients, perClient := 200, 50
	if testing.Short() {
		clients = 40
	}
	dir := httpIngest(t)
	state := filepath.Join(dir, "state")
	p := Start(t, dir, nil, "run", dir, "--state", state, "--progress", "never", "--log-level", "info")
	p.WaitFor("http source listening", time.Minute)
	m := regexp.MustCompile(`addr=(127\.0\.0\.1:\d+)`).FindStringSubmatch(p.Output())
	if m == nil {
		t.Fatalf("no address in the log:\n%s", p.Output())
	}
	addr := m[1]
	c := newIngestClient("http://" + addr + "/ingest")
	row := func(id int) string { return fmt.Sprintf(`{"id":%d,"qty":%d}`, id, id%7) }

	var wg sync.WaitGroup
	// Slowloris: connections that send a byte a second are closed by
	// the server after read_timeout (5s), while the others are served.
	slow := make([]time.Duration, 10)
	for i := range slow {
		wg.Go(func() { slow[i] = slowloris(t, addr, i%2 == 0) })
	}
	// 200 concurrent clients of 50 rows each: ids 1..10000.
	for k := range clients {
		wg.Go(func() {
			ids := idRange(1+k*perClient, perClient)
			if code, answer := c.post(t, "application/x-ndjson", ids, idBody(ids, row)); code != 200 {
				t.Errorf("client %d: %d %s", k, code, answer)
			}
		})
	}
	// Bodies of 200 KiB: a few fit the 4 MiB budget at once, the others
	// are refused with 429 until room frees. ids 100001..
	for k := range 40 {
		wg.Go(func() {
			ids := idRange(100001+k*2000, 2000)
			body := idBody(ids, func(id int) string { return fmt.Sprintf(`{"id":%d,"qty":1,"pad":"%s"}`, id, strings.Repeat("p", 70)) })
			if code, answer := c.post(t, "application/json", ids, body); code != 200 {
				t.Errorf("large body %d: %d %.200s", k, code, answer)
			}
		})
	}
	// Refused whole: over max_body, malformed JSON (the bad line is the
	// last, after good ones), a wrong Content-Type. ids 900001..
	refusals := []struct {
		ctype string
		ids   []int
		body  func(ids []int) string
		code  int
		want  string
	}{
		{"application/x-ndjson", idRange(900001, 5000), func(ids []int) string {
			return idBody(ids, func(id int) string { return fmt.Sprintf(`{"id":%d,"qty":1,"pad":"%s"}`, id, strings.Repeat("p", 60)) })
		}, 413, "body over 262144 bytes"},
		{"application/x-ndjson", idRange(910001, 20), func(ids []int) string { return idBody(ids, row) + "{\"id\": oops}\n" }, 400, `"line":21`},
		{"application/json", idRange(920001, 20), func(ids []int) string {
			return "[" + strings.TrimSuffix(strings.ReplaceAll(idBody(ids, row), "\n", ","), ",")
		}, 400, "malformed JSON near byte"},
		{"text/plain", idRange(930001, 20), func(ids []int) string { return idBody(ids, row) }, 415, "unsupported Content-Type"},
	}
	for _, r := range refusals {
		wg.Go(func() {
			if code, answer := c.post(t, r.ctype, r.ids, r.body(r.ids)); code != r.code || !strings.Contains(answer, r.want) {
				t.Errorf("%s: %d %.200s, want %d %s", r.ctype, code, answer, r.code, r.want)
			}
		})
	}
	// Poison rows: the second and fourth rows of a request fail the calc;
	// the request is answered 422 naming them. ids 950001..950005.
	wg.Go(func() {
		ids := idRange(950001, 5)
		body := idBody(ids, func(id int) string {
			if id == 950002 || id == 950004 {
				return fmt.Sprintf(`{"id":%d,"qty":"x"}`, id)
			}
			return row(id)
		})
		code, answer := c.post(t, "application/x-ndjson", ids, body)
		if code != 422 || !strings.Contains(answer, `"accepted":3,"dead_lettered":2`) || !strings.Contains(answer, `"row":1`) || !strings.Contains(answer, `"row":3`) {
			t.Errorf("poison rows: %d %s", code, answer)
		}
	})
	wg.Wait()
	for i, d := range slow {
		// The clock starts when the dial returns, which on a loaded
		// machine can be a second after the server accepted.
		if d < 3*time.Second || d > 20*time.Second {
			t.Errorf("slow connection %d closed after %v, want about read_timeout (5s)", i, d)
		}
	}

	p.Signal(syscall.SIGTERM)
	if code := p.Wait(time.Minute); code != 0 {
		t.Errorf("exit %d after SIGTERM", code)
	}
	counts := SQLiteCounts(t, filepath.Join(dir, "out.db"), "SELECT id FROM out")
	var bad []string
	for id, n := range c.accepted {
		if counts[int64(id)] != n {
			bad = append(bad, fmt.Sprintf("id %d: accepted %d times, in the sink %d times", id, n, counts[int64(id)]))
		}
	}
	for id, got := range counts {
		if _, ok := c.accepted[int(id)]; !ok && got > c.unsure[int(id)] {
			bad = append(bad, fmt.Sprintf("id %d: in the sink %d times, never accepted (%d refusals, %d answers lost)", id, got, c.rejected[int(id)], c.unsure[int(id)]))
		}
	}
	if len(bad) > 0 {
		t.Errorf("%d ids wrong, e.g. %v", len(bad), bad[:min(len(bad), 10)])
	}
	if want := clients*perClient + 40*2000 + 3; len(c.accepted) != want {
		t.Errorf("%d ids accepted, want %d", len(c.accepted), want)
	}
	dead := JSONLines(t, filepath.Join(state, "dead-letter", "Ingest.jsonl"))
	if len(dead) != 2 {
		t.Errorf("%d dead letters, want 2: %v", len(dead), dead)
	}
	t.Logf("answers %v, %d slow connections closed after %v..%v", c.codes, len(slow), slices.Min(slow), slices.Max(slow))
}

// slowloris opens a connection and sends a request a byte a second (its
// headers when body is false, else its body), and returns how long the
// server kept it open.
func slowloris(t *testing.T, addr string, body bool) time.Duration {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Error(err)
		return 0
	}
	defer conn.Close()
	start := time.Now()
	_ = conn.SetDeadline(start.Add(30 * time.Second))
	prefix, drip := "POST /ingest HTTP/1.1\r\n", strings.Repeat("X-Pad: a\r\n", 10)
	if body {
		prefix = "POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
		drip = strings.Repeat(" ", 100)
	}
	if _, err := io.WriteString(conn, prefix); err != nil {
		t.Error(err)
		return 0
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for i := range len(drip) {
			select {
			case <-tick.C:
			case <-ctx.Done():
				return
			}
			if _, err := conn.Write([]byte{drip[i]}); err != nil {
				return
			}
		}
	}()
	_, _ = bufio.NewReader(conn).ReadString('\n')
	_, err = io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return 30 * time.Second // held for ever, as far as the test can tell
	}
	return time.Since(start)
}
