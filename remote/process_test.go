package remote_test

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kisflow-go/kisflow/internal/testenv"
	"github.com/kisflow-go/kisflow/remote"

	_ "modernc.org/sqlite"
)

// The kisflow binary, built once for the tests that run it.
var (
	binOnce sync.Once
	binPath string
	binErr  error
)

func kisflowBin(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if b := os.Getenv("KISFLOW_REMOTE_BIN"); b != "" {
			binPath = b
			return
		}
		dir, err := os.MkdirTemp("", "kisflow-remote-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "kisflow")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/kisflow-go/kisflow/cmd/kisflow").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("building kisflow: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// proc is a running kisflow process.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	line chan string // stdout lines
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func start(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(kisflowBin(t), args...), done: make(chan struct{}), line: make(chan string, 100)}
	p.cmd.Stderr = p
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			fmt.Fprintln(p, sc.Text())
			select {
			case p.line <- sc.Text():
			default:
			}
		}
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// serving starts `kisflow serve` and returns it with the address it
// registered.
func serving(t *testing.T, dir string, args ...string) (*proc, string) {
	t.Helper()
	p := start(t, append([]string{"serve", dir}, args...)...)
	select {
	case l := <-p.line:
		if !strings.HasPrefix(l, "serving ") {
			t.Fatalf("serve printed %q", l)
		}
		addr := strings.Fields(l)[3]
		return p, strings.TrimSuffix(addr, ":")
	case <-p.done:
		t.Fatalf("serve exited: %s", p.output())
	case <-time.After(20 * time.Second):
		t.Fatalf("serve did not start: %s", p.output())
	}
	return nil, ""
}

func (p *proc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		t.Fatalf("still running after %s: %s", d, p.output())
	}
	return -1
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const providerYAML = `kistype: func
fname: Price
fmode: Calculate
calc:
  price: amount * 2
`

func waitProviders(t *testing.T, d remote.Directory, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for len(d.Providers()) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d providers after %s, want %d", len(d.Providers()), within, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestServeRegistersAndDeregisters: kisflow serve is listed while it runs,
// gone at once after SIGTERM, and gone after its TTL after SIGKILL.
func TestServeRegistersAndDeregisters(t *testing.T) {
	t.Parallel()
	url := testenv.NATS.Addr(t)
	bucket, service := testenv.Name("kfrp_"), testenv.Name("svc_")
	remote.DropBucket(t, url, bucket)
	pdir := writeFiles(t, map[string]string{"funcs.yml": providerYAML})
	dir, err := remote.WatchNATS(context.Background(), url, bucket, service, "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	args := []string{"--service", service, "--registry", url, "--bucket", bucket, "--ttl", "2s", "--version", "1.2", "--weight", "3"}

	p, addr := serving(t, pdir, args...)
	waitProviders(t, dir, 1, time.Second)
	if got := dir.Providers()[0]; got.Addr != addr || got.Version != "1.2" || got.Weight != 3 || strings.Join(got.Funcs, ",") != "Price" {
		t.Fatalf("registered %+v, want address %s, version 1.2, weight 3, functions [Price]", got, addr)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	waitProviders(t, dir, 0, time.Second)
	if code := p.wait(t, 10*time.Second); code != 0 || !strings.Contains(p.output(), "deregistered and drained") {
		t.Fatalf("serve exited %d after SIGTERM: %s", code, p.output())
	}

	p2, _ := serving(t, pdir, args...)
	waitProviders(t, dir, 1, time.Second)
	_ = p2.cmd.Process.Kill()
	killed := time.Now()
	waitProviders(t, dir, 0, 4*time.Second)
	if d := time.Since(killed); d < time.Second {
		t.Fatalf("a killed provider was dropped after %s, before its 2s TTL could pass", d)
	}
}

// TestRemoteStepFailsOverWhenAProviderIsKilled: a flow run by `kisflow
// run` calls a YAML function served by two `kisflow serve` processes; one
// is SIGKILLed mid-stream; every row still comes out computed: at least
// once into a file, exactly once into SQLite.
func TestRemoteStepFailsOverWhenAProviderIsKilled(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, sink, delivery string }{
		{"at-least-once", fileSink, "at-least-once"},
		{"exactly-once", "kistype: conn\ncname: out\ntype: sqlite\nkey: out\nparams:\n  path: out.db\n  create: \"true\"\n  columns: id,amount,price\n", "exactly-once"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			failOver(t, tc.sink, tc.delivery)
		})
	}
}

func failOver(t *testing.T, sink, delivery string) {
	url := testenv.NATS.Addr(t)
	bucket, service := testenv.Name("kfrp_"), testenv.Name("svc_")
	remote.DropBucket(t, url, bucket)
	pdir := writeFiles(t, map[string]string{"funcs.yml": providerYAML})
	args := []string{"--service", service, "--registry", url, "--bucket", bucket, "--ttl", "3s"}
	a, _ := serving(t, pdir, args...)
	serving(t, pdir, args...)

	cdir := callerDir(t, url, bucket, service, sink, delivery)
	run := start(t, "run", cdir, "--log-level", "info", "--progress", "never")
	const total = 3000
	feed(t, cdir, 0, total, 20*time.Millisecond, func(i int) {
		if i == 1050 {
			_ = a.cmd.Process.Kill() // mid-stream, while still registered
		}
	})
	read := readFileRows
	if delivery == "exactly-once" {
		read = readDBRows
	}
	seen := map[int]int{}
	deadline := time.Now().Add(30 * time.Second)
	for len(seen) < total && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		seen = read(t, cdir)
	}
	_ = run.cmd.Process.Signal(syscall.SIGTERM)
	code := run.wait(t, 20*time.Second)
	seen = read(t, cdir)
	if len(seen) != total {
		t.Fatalf("%d of %d rows came out after a provider was killed (run exit %d): %s", len(seen), total, code, run.output())
	}
	if code != 0 {
		t.Fatalf("run exited %d: %s", code, run.output())
	}
	if !strings.Contains(run.output(), "remote call failed over") {
		t.Fatalf("no call failed over to the live provider: %s", run.output())
	}
	dups := 0
	for _, n := range seen {
		dups += n - 1
	}
	if delivery == "exactly-once" && dups > 0 {
		t.Fatalf("%d rows written twice into an exactly-once sink", dups)
	}
	t.Logf("%s: %d rows, %d repeated", delivery, total, dups)
}

type priced struct{ ID, Amount, Price int }

func readFileRows(t *testing.T, dir string) map[int]int {
	seen := map[int]int{}
	data, _ := os.ReadFile(filepath.Join(dir, "out.jsonl"))
	for _, l := range bytes.Split(data, []byte("\n")) {
		var r priced
		if len(l) == 0 || json.Unmarshal(l, &r) != nil {
			continue // a line being written
		}
		if r.Price != 2*r.Amount {
			t.Fatalf("row %s: price not computed", l)
		}
		seen[r.ID]++
	}
	return seen
}

func readDBRows(t *testing.T, dir string) map[int]int {
	seen := map[int]int{}
	db, err := sql.Open("sqlite", filepath.Join(dir, "out.db")+"?_pragma=busy_timeout(5000)&mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query("SELECT id, amount, price FROM out")
	if err != nil {
		return seen // not created yet
	}
	defer rows.Close()
	for rows.Next() {
		var r priced
		if err := rows.Scan(&r.ID, &r.Amount, &r.Price); err != nil {
			t.Fatal(err)
		}
		if r.Price != 2*r.Amount {
			t.Fatalf("row %+v: price not computed", r)
		}
		seen[r.ID]++
	}
	return seen
}

// TestServeReadsTheGlobalServeBlock: the serve block of the global file
// gives kisflow serve its settings; a flag wins over it.
func TestServeReadsTheGlobalServeBlock(t *testing.T) {
	t.Parallel()
	url := testenv.NATS.Addr(t)
	bucket, service := testenv.Name("kfrp_"), testenv.Name("svc_")
	remote.DropBucket(t, url, bucket)
	pdir := writeFiles(t, map[string]string{"funcs.yml": providerYAML,
		"global.yml": fmt.Sprintf("kistype: global\nserve:\n  service: %s\n  registry: %s\n  bucket: %s\n  version: \"3\"\n  group: blue\n  weight: 9\n  ttl: 2s\n", service, url, bucket)})
	dir, err := remote.WatchNATS(context.Background(), url, bucket, service, "3", "blue")
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	p, addr := serving(t, pdir, "--weight", "4")
	waitProviders(t, dir, 1, time.Second)
	if got := dir.Providers()[0]; got.Addr != addr || got.Weight != 4 || got.TTL != 2*time.Second {
		t.Fatalf("registered %+v: want the block's version, group and TTL, the flag's weight 4", got)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	p.wait(t, 10*time.Second)
}
