package http

import (
	"context"
	"errors"
	"io"
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
	code int
	body string
	at   time.Time
}

func post(url, body string) <-chan response {
	ch := make(chan response, 1)
	go func() {
		resp, err := nethttp.Post(url, "application/x-ndjson", strings.NewReader(body))
		if err != nil {
			ch <- response{code: -1, body: err.Error()}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ch <- response{code: resp.StatusCode, body: string(b), at: time.Now()}
	}()
	return ch
}

func TestAnswersOnlyOnceRowsAreProcessed(t *testing.T) {
	t.Parallel()
	in, src := openIngest(t, nil)
	url := "http://" + in.Addr() + "/ingest"
	ctx := context.Background()

	reply := post(url, "{\"id\":1}\n{\"id\":2}\n")
	var msgs []*stream.Message
	for len(msgs) < 2 {
		m, err := src.Read(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m...)
	}
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

	// A JSON array is rows too; a failed batch answers 503.
	reply = post(url, `[{"id":3},{"id":4},{"id":5}]`)
	msgs = msgs[:0]
	for len(msgs) < 3 {
		m, _ := src.Read(ctx, 10)
		msgs = append(msgs, m...)
	}
	_ = src.(stream.Nacker).Nack(ctx, msgs, errors.New("sink down"))
	if r := <-reply; r.code != 503 || !strings.Contains(r.body, "sink down") {
		t.Fatalf("nack reply %+v", r)
	}
}

func TestRejectsBadRequests(t *testing.T) {
	t.Parallel()
	in, _ := openIngest(t, map[string]string{"max_body": "64"})
	url := "http://" + in.Addr() + "/ingest"
	tests := []struct {
		body string
		code int
		want string
	}{
		{"{\"id\":1}\n{oops}\n", 400, "malformed JSON on line 2"},
		{`[{"id":1},`, 400, "malformed JSON array"},
		{strings.Repeat(`{"id":1}`+"\n", 20), 413, "body over 64 bytes"},
		{"", 200, `"accepted":0`},
	}
	for _, tt := range tests {
		if r := <-post(url, tt.body); r.code != tt.code || !strings.Contains(r.body, tt.want) {
			t.Errorf("body %.20q: got %d %q, want %d %q", tt.body, r.code, r.body, tt.code, tt.want)
		}
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

func TestCloseAnswersWaitingRequests(t *testing.T) {
	t.Parallel()
	in, src := openIngest(t, nil)
	reply := post("http://"+in.Addr()+"/ingest", `{"id":1}`)
	for {
		// Wait until the row is queued, then shut down without reading it.
		if len(src.(*source).msgs) == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := src.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := <-reply; r.code != 503 {
		t.Fatalf("reply after close: %+v", r)
	}
}
