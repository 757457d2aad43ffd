package http

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	nethttp "net/http"
	"strings"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/stream"
)

func openIngest(t *testing.T, params map[string]string) (*Ingest, stream.Source) {
	t.Helper()
	d, err := New(&config.Conn{CName: "in", Addrs: "127.0.0.1:0", Key: "/ingest", Params: params})
	if err != nil {
		t.Fatal(err)
	}
	in := d.(*Ingest)
	src, err := in.OpenSource(context.Background(), stream.SourceOptions{Name: "t"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close(context.Background()) })
	return in, src
}

type response struct {
	code   int
	body   string
	header nethttp.Header
	at     time.Time
}

// post sends body with contentType ("" for none) and delivers the answer.
func post(url, contentType string, body io.Reader) <-chan response {
	ch := make(chan response, 1)
	go func() {
		req, err := nethttp.NewRequest(nethttp.MethodPost, url, body)
		if err != nil {
			ch <- response{code: -1, body: err.Error()}
			return
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := nethttp.DefaultClient.Do(req)
		if err != nil {
			ch <- response{code: -1, body: err.Error()}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ch <- response{code: resp.StatusCode, body: string(b), header: resp.Header, at: time.Now()}
	}()
	return ch
}

// readN reads n messages from src.
func readN(t *testing.T, src stream.Source, n int) []*stream.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var msgs []*stream.Message
	for len(msgs) < n {
		m, err := src.Read(ctx, n-len(msgs))
		if err != nil {
			t.Fatalf("read %d of %d messages: %v", len(msgs), n, err)
		}
		msgs = append(msgs, m...)
	}
	return msgs
}

// queued reports how many requests wait in src's queue.
func queued(src stream.Source) int { return len(src.(*source).queue) }

func TestAnswersOnlyOnceRowsAreProcessed(t *testing.T) {
	t.Parallel()
	in, src := openIngest(t, nil)
	url := "http://" + in.Addr() + "/ingest"
	ctx := context.Background()

	reply := post(url, "application/x-ndjson", strings.NewReader("{\"id\":1}\n{\"id\":2}\n"))
	msgs := readN(t, src, 2)
	if string(msgs[0].Payload.([]byte)) != `{"id":1}` {
		t.Fatalf("payload %q", msgs[0].Payload)
	}
	_ = src.Ack(ctx, msgs[:1])
	select {
	case r := <-reply:
		t.Fatalf("answered %d before every row was processed", r.code)
	case <-time.After(50 * time.Millisecond):
	}
	acked := time.Now()
	_ = src.Ack(ctx, msgs[1:])
	r := <-reply
	if r.code != 200 || !strings.Contains(r.body, `"accepted":2`) || r.at.Before(acked) {
		t.Fatalf("reply %+v", r)
	}
}

// TestAnswerSaysWhatWasDeadLettered: a request is answered by how its rows
// fared, told by the runtime through Ack, Nack and DeadLettered.
func TestAnswerSaysWhatWasDeadLettered(t *testing.T) {
	t.Parallel()
	in, src := openIngest(t, nil)
	url := "http://" + in.Addr() + "/ingest"
	ctx := context.Background()
	tests := []struct {
		name   string
		settle func(msgs []*stream.Message)
		code   int
		want   []string
	}{
		{"all processed", func(msgs []*stream.Message) { _ = src.Ack(ctx, msgs) },
			200, []string{`{"accepted":3}`}},
		{"one dead-lettered", func(msgs []*stream.Message) {
			src.(stream.DeadLetterNotifier).DeadLettered(ctx, msgs[1:2], []*stream.DeadLetter{{Func: "Scale", Error: "value is not a number"}})
			_ = src.Ack(ctx, msgs)
		}, 422, []string{`"accepted":2`, `"dead_lettered":1`, `"row":1`, `"func":"Scale"`, `value is not a number`}},
		{"a row with two dead letters, told later rows first", func(msgs []*stream.Message) {
			n := src.(stream.DeadLetterNotifier)
			n.DeadLettered(ctx, msgs[2:3], []*stream.DeadLetter{{Func: "sink db", Error: "bigint"}})
			n.DeadLettered(ctx, []*stream.Message{msgs[0], msgs[0]}, []*stream.DeadLetter{{Func: "Split", Error: "first"}, {Func: "Split", Error: "second"}})
			_ = src.Ack(ctx, msgs)
		}, 422, []string{`"accepted":1,"dead_lettered":2,"errors":[{"row":0,"func":"Split","error":"first"},{"row":2,"func":"sink db","error":"bigint"}]}`}},
		{"not processed", func(msgs []*stream.Message) {
			_ = src.Ack(ctx, msgs[:1])
			_ = src.(stream.Nacker).Nack(ctx, msgs[1:], errors.New("sink down"))
		}, 503, []string{`"error":"not all rows were processed: sink down; a resend may repeat the rows that were"`, `"processed":1`}},
	}
	for _, tt := range tests {
		reply := post(url, "application/json", strings.NewReader(`[{"id":3},{"id":4},{"id":5}]`))
		tt.settle(readN(t, src, 3))
		r := <-reply
		if r.code != tt.code {
			t.Errorf("%s: got %d %s, want %d", tt.name, r.code, r.body, tt.code)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(r.body, w) {
				t.Errorf("%s: body %s lacks %s", tt.name, r.body, w)
			}
		}
		if r.code == 503 && r.header.Get("Retry-After") == "" {
			t.Errorf("%s: 503 without Retry-After", tt.name)
		}
	}
}

// TestContentTypes: the Content-Type decides how a body splits into rows.
func TestContentTypes(t *testing.T) {
	t.Parallel()
	in, src := openIngest(t, nil)
	url := "http://" + in.Addr() + "/ingest"
	tests := []struct {
		ctype string
		body  string
		rows  []string
	}{
		{"application/json", `[{"id":1}, {"id":2}]`, []string{`{"id":1}`, `{"id":2}`}},
		{"application/json; charset=utf-8", "{\n  \"id\": 1\n}", []string{"{\n  \"id\": 1\n}"}},
		{"application/json", "{\"id\":1}\n{\"id\":2}\n", []string{`{"id":1}`, `{"id":2}`}},
		{"", ` [{"id":1}] [{"id":2}] {"id":3}`, []string{`{"id":1}`, `{"id":2}`, `{"id":3}`}},
		{"application/vnd.acme+json", `{"id":7}`, []string{`{"id":7}`}},
		{"application/x-ndjson", "[1,2]\n\n{\"id\":2}\r\n", []string{`[1,2]`, `{"id":2}`}},
		{"application/jsonl", `{"id":1}`, []string{`{"id":1}`}},
		{"text/csv", "id,name,score\n1,ann,9.5\n2,\"b, \"\"c\"\"\",-3\n", []string{
			`{"id":1,"name":"ann","score":9.5}`, `{"id":2,"name":"b, \"c\"","score":-3}`}},
		{"text/csv", "\ufeffid,name\n1,ann\n", []string{`{"id":1,"name":"ann"}`}}, // an Excel export's byte order mark
	}
	for _, tt := range tests {
		reply := post(url, tt.ctype, strings.NewReader(tt.body))
		msgs := readN(t, src, len(tt.rows))
		_ = src.Ack(context.Background(), msgs)
		r := <-reply
		if r.code != 200 {
			t.Errorf("%q %q: answered %d %s", tt.ctype, tt.body, r.code, r.body)
		}
		for i, m := range msgs {
			if got := string(m.Payload.([]byte)); got != tt.rows[i] {
				t.Errorf("%q %q: row %d is %q, want %q", tt.ctype, tt.body, i, got, tt.rows[i])
			}
		}
		if n := queued(src); n != 0 {
			t.Fatalf("%q %q: %d more requests queued", tt.ctype, tt.body, n)
		}
	}
}

// TestRejectsBadRequests: bad requests are answered at once and queue
// nothing.
func TestRejectsBadRequests(t *testing.T) {
	t.Parallel()
	in, src := openIngest(t, map[string]string{"max_body": "64"})
	url := "http://" + in.Addr() + "/ingest"
	tests := []struct {
		ctype   string
		body    string
		code    int
		want    string
		chunked bool // sent without a Content-Length
	}{
		{"application/x-ndjson", "{\"id\":1}\n{oops}\n", 400, `"line":2`, false},
		{"application/x-ndjson", "{\"id\":1}\n{oops}\n", 400, "malformed JSON on line 2", false},
		{"application/json", `[{"id":1},`, 400, `"offset":10`, false},
		{"application/json", `[{"id":1} {"id":2}]`, 400, "malformed JSON near byte", false},
		{"application/json", `{"id":1} {oops`, 400, "malformed JSON near byte 11", false},
		{"text/csv", "a,b\n1,2\n3\n", 400, `"line":3`, false},
		{"text/plain", `{"id":1}`, 415, "unsupported Content-Type", false},
		{"application/xml", `<id>1</id>`, 415, "text/csv", false},
		{"application/json", strings.Repeat(`{"id":1}`+"\n", 20), 413, "body over 64 bytes", false},
		{"application/json", strings.Repeat(`{"id":1}`+"\n", 20), 413, "body over 64 bytes", true},
		{"application/json", "", 200, `"accepted":0`, false},
	}
	for _, tt := range tests {
		var body io.Reader = strings.NewReader(tt.body)
		if tt.chunked {
			body = io.MultiReader(body)
		}
		r := <-post(url, tt.ctype, body)
		if r.code != tt.code || !strings.Contains(r.body, tt.want) {
			t.Errorf("%s %.20q: got %d %q, want %d %q", tt.ctype, tt.body, r.code, r.body, tt.code, tt.want)
		}
	}
	if n := queued(src); n != 0 {
		t.Errorf("%d requests queued from bad bodies", n)
	}
	resp, err := nethttp.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("GET: %d", resp.StatusCode)
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		params map[string]string
		want   string
	}{
		{map[string]string{"max_in_flight_byte": "1"}, `param max_in_flight_byte: unknown param (did you mean max_in_flight_bytes?)`},
		{map[string]string{"max_body": "100", "max_in_flight_bytes": "10"}, "max_body 100 is over max_in_flight_bytes 10"},
		{map[string]string{"max_in_flight_bytes": "-1"}, `param max_in_flight_bytes: "-1" is not a size`},
		{map[string]string{"read_timeout": "soon"}, `param read_timeout: "soon" is not a duration`},
		{map[string]string{"max_conns": "-2"}, `param max_conns: "-2" is below the minimum 0`},
	}
	for _, tt := range tests {
		_, err := New(&config.Conn{CName: "in", Params: tt.params})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: got %v, want %q", tt.params, err, tt.want)
		}
	}
}

// TestInFlightBudget: bodies not yet processed hold their bytes; a request
// that does not fit is refused with 429 and Retry-After, whether its length
// is known up front or not, and fits again once the others are processed.
func TestInFlightBudget(t *testing.T) {
	t.Parallel()
	// Ten rows of 9 bytes cost 90 + 10*rowOverhead = 2650 bytes: one such
	// request fits, two do not.
	in, src := openIngest(t, map[string]string{"max_body": "1000", "max_in_flight_bytes": "4000"})
	url := "http://" + in.Addr() + "/ingest"
	ctx := context.Background()
	body := strings.Repeat(`{"id":1} `, 10)
	held := post(url, "application/json", strings.NewReader(body))
	msgs := readN(t, src, 10)

	tests := []struct {
		name string
		body io.Reader
	}{
		{"known length", strings.NewReader(body)},
		{"chunked", io.MultiReader(strings.NewReader(body))}, // no length: sent chunked
	}
	for _, tt := range tests {
		r := <-post(url, "application/json", tt.body)
		if r.code != 429 || r.header.Get("Retry-After") == "" || !strings.Contains(r.body, "max_in_flight_bytes") {
			t.Errorf("%s: over the budget got %d %q (Retry-After %q)", tt.name, r.code, r.body, r.header.Get("Retry-After"))
		}
	}
	if n := queued(src); n != 0 {
		t.Fatalf("%d refused requests queued", n)
	}
	_ = src.Ack(ctx, msgs)
	if r := <-held; r.code != 200 {
		t.Fatalf("held request: %d %s", r.code, r.body)
	}
	if used := src.(*source).budget.used.Load(); used != 0 {
		t.Fatalf("%d bytes still counted after every request was answered", used)
	}
	reply := post(url, "application/json", io.MultiReader(strings.NewReader(body)))
	_ = src.Ack(ctx, readN(t, src, 10))
	if r := <-reply; r.code != 200 {
		t.Fatalf("after the budget freed: %d %s", r.code, r.body)
	}
}

// TestBodyOverBudgetWithRowsIsServedAlone: a body within max_body whose
// rows' overhead takes it over the whole budget is accepted when nothing
// else is in flight (it used to get 429 for ever); while it is held, the
// other requests get 429, and it gets 429 while another is held.
func TestBodyOverBudgetWithRowsIsServedAlone(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		params map[string]string
		line   string
		rows   int
	}{
		// 2.4 MB + 300,000 x rowOverhead = 79 MB, over the default 64 MiB.
		{"default params", nil, `{"a":1}` + "\n", 300_000},
		// 20 KB + 800 x rowOverhead = 225 KB, over 200,000.
		{"small budget", map[string]string{"max_body": "200000", "max_in_flight_bytes": "200000"}, `{"a":"0123456789abcdef"}` + "\n", 800},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in, src := openIngest(t, tt.params)
			url := "http://" + in.Addr() + "/ingest"
			ctx := context.Background()
			big := strings.Repeat(tt.line, tt.rows)
			small := strings.Repeat(tt.line, 2)

			// Another request held: the big one is refused, for now.
			held := post(url, "application/x-ndjson", strings.NewReader(small))
			msgs := readN(t, src, 2)
			if r := <-post(url, "application/x-ndjson", strings.NewReader(big)); r.code != 429 || r.header.Get("Retry-After") == "" {
				t.Fatalf("big body beside another: %d %q, want 429 with Retry-After", r.code, r.body)
			}
			_ = src.Ack(ctx, msgs)
			if r := <-held; r.code != 200 {
				t.Fatalf("held request: %d %s", r.code, r.body)
			}

			// Alone, known length or chunked: accepted, and the others
			// refused while it is held.
			for _, body := range []io.Reader{strings.NewReader(big), io.MultiReader(strings.NewReader(big))} {
				reply := post(url, "application/x-ndjson", body)
				msgs := readN(t, src, tt.rows)
				if r := <-post(url, "application/x-ndjson", strings.NewReader(small)); r.code != 429 {
					t.Fatalf("small body beside the big one: %d %q, want 429", r.code, r.body)
				}
				_ = src.Ack(ctx, msgs)
				r := <-reply
				if want := fmt.Sprintf(`{"accepted":%d}`, tt.rows); r.code != 200 || strings.TrimSpace(r.body) != want {
					t.Fatalf("big body alone: %d %q, want 200 %s", r.code, r.body, want)
				}
				if used := src.(*source).budget.used.Load(); used != 0 {
					t.Fatalf("%d bytes still counted after the big body was answered", used)
				}
			}
		})
	}
}

// TestSlowClientsAreCutOff: a client that sends its headers or body a byte
// at a time, or stops, is cut off after read_timeout, not held: a body is
// answered 408; headers are answered by Go's server, 400 if they stopped
// mid-line and not at all if between lines, as the README says.
func TestSlowClientsAreCutOff(t *testing.T) {
	t.Parallel()
	const readTimeout = 300 * time.Millisecond
	in, _ := openIngest(t, map[string]string{"read_timeout": readTimeout.String()})
	tests := []struct {
		name   string
		prefix string // sent at once
		drip   string // then a byte every 50ms
		want   string // in the status line; "" for none, "*" for any
	}{
		{"slow body", "POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n", strings.Repeat(" ", 1000), "408"},
		{"slow headers", "POST /ingest HTTP/1.1\r\n", strings.Repeat("X-Pad: a\r\n", 100), "*"},
		{"headers stopped mid-line", "POST /ingest HTTP/1.1\r\nHost: x\r\nX-P", "", "400 Bad Request"},
		{"headers stopped between lines", "POST /ingest HTTP/1.1\r\nHost: x\r\n", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			conn, err := net.Dial("tcp", in.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			start := time.Now()
			_ = conn.SetDeadline(start.Add(10 * time.Second))
			if _, err := io.WriteString(conn, tt.prefix); err != nil {
				t.Fatal(err)
			}
			go func() {
				tick := time.NewTicker(50 * time.Millisecond)
				defer tick.Stop()
				for i := range len(tt.drip) {
					<-tick.C
					if _, err := conn.Write([]byte{tt.drip[i]}); err != nil {
						return
					}
				}
			}()
			// The server answers (408) and closes, or just closes.
			status, _ := bufio.NewReader(conn).ReadString('\n')
			_, err = io.Copy(io.Discard, conn)
			elapsed := time.Since(start)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("connection held for %v (answer %q)", elapsed, status)
			}
			if elapsed < readTimeout || elapsed > 5*readTimeout {
				t.Fatalf("closed after %v, want about %v", elapsed, readTimeout)
			}
			ok := tt.want == "*" || tt.want == "" && status == "" || tt.want != "" && strings.Contains(status, tt.want)
			if !ok {
				t.Fatalf("answer %q, want %q", status, tt.want)
			}
		})
	}
}

// TestMaxConns: beyond max_conns a connection waits to be served until
// another closes.
func TestMaxConns(t *testing.T) {
	t.Parallel()
	in, src := openIngest(t, map[string]string{"max_conns": "1"})
	holder, err := net.Dial("tcp", in.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	// The holder's connection is being served once its request is queued.
	fmt.Fprintf(holder, "POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{\"id\":1}")
	held := readN(t, src, 1)
	reply := post("http://"+in.Addr()+"/ingest", "application/json", strings.NewReader(`{"id":2}`))
	select {
	case r := <-reply:
		t.Fatalf("a second connection was served while the first held the only one: %+v", r)
	case <-time.After(200 * time.Millisecond):
	}
	_ = src.Ack(context.Background(), held)
	holder.Close()
	msgs := readN(t, src, 1)
	_ = src.Ack(context.Background(), msgs)
	if r := <-reply; r.code != 200 {
		t.Fatalf("second request after the first closed: %+v", r)
	}
}

func TestCloseAnswersWaitingRequests(t *testing.T) {
	t.Parallel()
	in, src := openIngest(t, nil)
	reply := post("http://"+in.Addr()+"/ingest", "application/json", strings.NewReader(`{"id":1}`))
	for queued(src) != 1 {
		// Wait until the row is queued, then shut down without reading it.
		time.Sleep(time.Millisecond)
	}
	if err := src.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := <-reply
	if r.code != 503 || r.header.Get("Retry-After") == "" {
		t.Fatalf("reply after close: %+v", r)
	}
	var res map[string]any
	if err := json.Unmarshal([]byte(r.body), &res); err != nil || !strings.Contains(fmt.Sprint(res["error"]), "shutting down") ||
		!strings.Contains(fmt.Sprint(res["error"]), "nothing was processed") || res["processed"] != nil {
		t.Fatalf("body %q (%v)", r.body, err)
	}
}

// TestCloseSaysWhatWasProcessed: a request some of whose rows the runtime
// took when the source closed is answered 503 saying that not all rows
// were processed, how many were, and that a resend may repeat them: never
// that the rows were not processed. That holds for rows never read (Close
// returns them) and for rows read and still in flight (the handler answers
// at Close).
func TestCloseSaysWhatWasProcessed(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name       string
		read, ackd int
	}{{"rows left unread", 2, 2}, {"rows in flight", 4, 1}} {
		in, src := openIngest(t, nil)
		ctx := context.Background()
		reply := post("http://"+in.Addr()+"/ingest", "application/x-ndjson", strings.NewReader("{\"id\":1}\n{\"id\":2}\n{\"id\":3}\n{\"id\":4}\n"))
		msgs := readN(t, src, tt.read)
		_ = src.Ack(ctx, msgs[:tt.ackd])
		if err := src.Close(ctx); err != nil {
			t.Fatal(err)
		}
		r := <-reply
		want := fmt.Sprintf(`{"error":"not all rows were processed: shutting down; a resend may repeat the rows that were","processed":%d}`, tt.ackd)
		if r.code != 503 || r.header.Get("Retry-After") == "" || strings.TrimSpace(r.body) != want {
			t.Errorf("%s: reply %d %q (Retry-After %q), want 503 %s", tt.name, r.code, r.body, r.header.Get("Retry-After"), want)
		}
	}
}
