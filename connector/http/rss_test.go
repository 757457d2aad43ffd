package http

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	nethttp "net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/stream"
)

// The RSS test runs the source in a child process (this test binary,
// re-run as TestRSSChild) so that the clients' memory is not counted.
const (
	rssChildEnv = "KISFLOW_HTTP_RSS_CHILD"
	rssClients  = 1000
	rssBody     = 256 << 10
	// rssBoundMiB is the documented bound on the server's peak RSS under
	// rssClients concurrent rssBody bodies with the default
	// max_in_flight_bytes of 64 MiB: the budget bounds the live bytes, the
	// garbage collector lets the heap reach about twice that, and each
	// connection costs about 20 KiB. The bodies offered at once are 250 MiB;
	// the source reading them whole, as it once did, peaked at 480 MiB.
	rssBoundMiB = 320
)

// TestRSSUnderConcurrentClients drives rssClients concurrent clients, each
// posting a rssBody body of JSON lines until it is accepted (retrying on 429
// after Retry-After), against a source in a child process, and checks that
// the child's peak RSS stays under rssBoundMiB and every row was read once.
func TestRSSUnderConcurrentClients(t *testing.T) {
	if testing.Short() {
		t.Skip("drives 1000 clients with 250 MiB of bodies")
	}
	if raceEnabled {
		t.Skip("the race detector multiplies the memory the bound is about")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestRSSChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), rssChildEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	lines := bufio.NewScanner(stdout)
	child := map[string]string{}
	next := func(key string) string {
		for lines.Scan() {
			f := strings.Fields(lines.Text())
			if len(f) < 2 {
				continue
			}
			if k := f[0]; k == "ADDR" || k == "ROWS" || strings.HasPrefix(k, "Vm") {
				child[k] = strings.Join(f[1:], " ")
				if k == key {
					return child[k]
				}
			}
		}
		t.Fatalf("child ended before printing %s", key)
		return ""
	}
	url := "http://" + next("ADDR") + "/ingest"

	// The clients ask before they send (Expect: 100-continue), so a 429
	// comes before the body is on the wire.
	client := &nethttp.Client{
		Transport: &nethttp.Transport{MaxIdleConnsPerHost: rssClients, ExpectContinueTimeout: time.Minute},
		Timeout:   2 * time.Minute,
	}
	line := []byte(`{"id":"0000000","pad":"` + strings.Repeat("x", 100) + `"}` + "\n")
	perBody := rssBody / len(line)
	var refused, cut, failed atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for c := range rssClients {
		wg.Go(func() {
			body := bytes.Repeat(line, perBody)
			for i := range perBody {
				copy(body[i*len(line)+7:], fmt.Sprintf("%07d", c*perBody+i))
			}
			for attempt := 0; attempt < 300; attempt++ {
				req, err := nethttp.NewRequest(nethttp.MethodPost, url, bytes.NewReader(body))
				if err != nil {
					t.Error(err)
					return
				}
				req.Header.Set("Content-Type", "application/x-ndjson")
				req.Header.Set("Expect", "100-continue")
				resp, err := client.Do(req)
				if err != nil {
					// A connection cut under load before an answer:
					// the rows were not taken, send them again.
					cut.Add(1)
					continue
				}
				answer, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch resp.StatusCode {
				case 200:
					return
				case 429:
					refused.Add(1)
					secs, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
					time.Sleep(time.Duration(secs)*time.Second/2 + time.Duration(c%100)*5*time.Millisecond)
				default:
					failed.Add(1)
					t.Errorf("client %d: answered %d %s", c, resp.StatusCode, answer)
					return
				}
			}
			failed.Add(1)
			t.Errorf("client %d: not accepted in 300 attempts", c)
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	_ = stdin.Close()
	rows, _ := strconv.Atoi(next("ROWS"))
	next("VmRSS:")
	hwm, _ := strconv.Atoi(strings.Fields(child["VmHWM:"])[0])
	t.Logf("%d clients x %d KiB: %v, %d refusals (429), %d connections cut, %d rows read; server VmHWM %d MiB, VmRSS at end %s",
		rssClients, rssBody>>10, elapsed.Round(time.Millisecond), refused.Load(), cut.Load(), rows, hwm>>10, child["VmRSS:"])
	if failed.Load() > 0 {
		t.Fatalf("%d clients failed", failed.Load())
	}
	if want := rssClients * perBody; rows != want {
		t.Errorf("server read %d rows, want %d", rows, want)
	}
	if hwm>>10 > rssBoundMiB {
		t.Errorf("server peak RSS %d MiB, over the bound of %d MiB", hwm>>10, rssBoundMiB)
	}
}

// TestRSSChild is the server side of TestRSSUnderConcurrentClients: it
// serves until its stdin closes, acknowledging every row, then prints the
// rows it read and its /proc/self/status memory lines.
func TestRSSChild(t *testing.T) {
	if os.Getenv(rssChildEnv) == "" {
		t.Skip("the child of TestRSSUnderConcurrentClients")
	}
	d, err := New(&config.Conn{CName: "in", Addrs: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	in := d.(*Ingest)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src, err := in.OpenSource(ctx, stream.SourceOptions{Name: "rss"})
	if err != nil {
		t.Fatal(err)
	}
	var rows int
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			msgs, err := src.Read(ctx, 1000)
			if err != nil {
				return
			}
			rows += len(msgs)
			_ = src.Ack(ctx, msgs)
		}
	}()
	fmt.Printf("ADDR %s\n", in.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
	cancel()
	<-done
	_ = src.Close(context.Background())
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("ROWS %d\n", rows)
	for l := range strings.Lines(string(status)) {
		if strings.HasPrefix(l, "VmHWM:") || strings.HasPrefix(l, "VmRSS:") {
			fmt.Print(l)
		}
	}
}
