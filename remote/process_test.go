package remote_test

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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

func kisflowBin(t testing.TB) string {
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

func start(t testing.TB, args ...string) *proc {
	t.Helper()
	return startBin(t, kisflowBin(t), args...)
}

// startBin starts the command line bin (kisflow's, or a project's own)
// with args.
func startBin(t testing.TB, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), done: make(chan struct{}), line: make(chan string, 100)}
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
func serving(t testing.TB, dir string, args ...string) (*proc, string) {
	t.Helper()
	p := start(t, append([]string{"serve", dir}, args...)...)
	return p, servingAddr(t, p)
}

// servingAddr waits for serve p to print its address and returns it.
func servingAddr(t testing.TB, p *proc) string {
	t.Helper()
	select {
	case l := <-p.line:
		if !strings.HasPrefix(l, "serving ") {
			t.Fatalf("serve printed %q", l)
		}
		return strings.TrimSuffix(strings.Fields(l)[3], ":")
	case <-p.done:
		t.Fatalf("serve exited: %s", p.output())
	case <-time.After(20 * time.Second):
		t.Fatalf("serve did not start: %s", p.output())
	}
	return ""
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

func writeFiles(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// freshRegistry is the test NATS server's url, an empty registry bucket
// and a service name, both of the test's own.
func freshRegistry(t *testing.T) (url, bucket, service string) {
	t.Helper()
	url = testenv.NATS.Addr(t)
	bucket, service = testenv.Name("kfrp_"), testenv.Name("svc_")
	remote.DropBucket(t, url, bucket)
	return url, bucket, service
}

// natsPricing is a remote connector pricing of service at the NATS
// registry url, bucket, with the params lines more.
func natsPricing(url, service, bucket, more string) string {
	return "kistype: conn\ncname: pricing\ntype: remote\naddrs: " + url + "\nparams:\n  service: " + service + "\n  bucket: " + bucket + "\n" + more
}

// followIn is a file source that follows in.jsonl.
const followIn = "kistype: conn\ncname: in\ntype: file\nparams:\n  path: in.jsonl\n  follow: true\n  poll: 10ms\n---\n"

const providerYAML = `kistype: func
fname: Price
fmode: Calculate
calc:
  price: amount * 2
`

// watchNATS follows the providers of service (of version and group, if
// given) in the NATS registry at url, bucket, until the test ends.
func watchNATS(t *testing.T, url, bucket, service, version, group string) remote.Directory {
	t.Helper()
	dir, err := remote.WatchNATS(context.Background(), url, bucket, service, version, group)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dir.Close() })
	return dir
}

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
	url, bucket, service := freshRegistry(t)
	pdir := writeFiles(t, map[string]string{"funcs.yml": providerYAML})
	dir := watchNATS(t, url, bucket, service, "", "")
	args := []string{"--service", service, "--registry", url, "--bucket", bucket, "--ttl", "2s", "--version", "1.2", "--weight", "3"}

	// The waits for a registration to show are long: a race-built serve
	// on a loaded machine takes seconds to start. "Gone at once" is 3s.
	p, addr := serving(t, pdir, args...)
	waitProviders(t, dir, 1, 10*time.Second)
	if got := dir.Providers()[0]; got.Addr != addr || got.Version != "1.2" || got.Weight != 3 || strings.Join(got.Funcs, ",") != "Price" {
		t.Fatalf("registered %+v, want address %s, version 1.2, weight 3, functions [Price]", got, addr)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	waitProviders(t, dir, 0, 3*time.Second)
	if code := p.wait(t, 10*time.Second); code != 0 || !strings.Contains(p.output(), "deregistered and drained") {
		t.Fatalf("serve exited %d after SIGTERM: %s", code, p.output())
	}

	p2, _ := serving(t, pdir, args...)
	waitProviders(t, dir, 1, 10*time.Second)
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
	for _, tc := range bothDeliveries {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			failOver(t, tc.sink, tc.delivery)
		})
	}
}

func failOver(t *testing.T, sink, delivery string) {
	url, bucket, service := freshRegistry(t)
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
	for _, l := range strings.Split(run.output(), "\n") {
		if strings.Contains(l, "remote call failed over") && !strings.Contains(l, "failed=\"provider 127.0.0.1:") {
			t.Errorf("a failover does not say which provider failed: %s", l)
		}
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
	url, bucket, service := freshRegistry(t)
	pdir := writeFiles(t, map[string]string{"funcs.yml": providerYAML,
		"global.yml": fmt.Sprintf("kistype: global\nserve:\n  service: %s\n  registry: %s\n  bucket: %s\n  version: \"3\"\n  group: blue\n  weight: 9\n  ttl: 2s\n", service, url, bucket)})
	dir := watchNATS(t, url, bucket, service, "3", "blue")
	p, addr := serving(t, pdir, "--weight", "4")
	waitProviders(t, dir, 1, time.Second)
	if got := dir.Providers()[0]; got.Addr != addr || got.Weight != 4 || got.TTL != 2*time.Second {
		t.Fatalf("registered %+v: want the block's version, group and TTL, the flag's weight 4", got)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	p.wait(t, 10*time.Second)
}

// TestThreeProvidersAndAFlowProcess runs `kisflow serve` processes and a
// `kisflow run` flow process against the machine's NATS, the remote step
// with consistent_hash on the stream key, version 1 and group green:
//
//   - A and B serve version 1, group green; X serves version 1, group blue,
//     and Y version 2, group green: X and Y never get a row (version and
//     group routing);
//   - while A and B are up, each user's rows go to one of them
//     (affinity), and both get users;
//   - A is SIGKILLed mid-stream: no row is lost, and the rows written
//     right after the kill come out within the connector's timeout
//     (failover, not the runtime's retries);
//   - C registers mid-stream and gets traffic; once A's registration has
//     expired, each user is again on one provider, and a user of B either
//     stayed on B or moved to C: keys move only to the new provider
//     (minimal movement).
//
// Each provider's calc writes its name into the rows (by), which is how
// the test tells who computed a row.
func TestThreeProvidersAndAFlowProcess(t *testing.T) {
	t.Parallel()
	url, bucket, service := freshRegistry(t)
	serve := func(name, version, group string) (*proc, string) {
		dir := writeFiles(t, map[string]string{"funcs.yml": fmt.Sprintf("kistype: func\nfname: Price\nfmode: Calculate\ncalc:\n  price: amount * 2\n  by: '%q'\n", name)})
		return serving(t, dir, "--service", service, "--registry", url, "--bucket", bucket, "--ttl", "2s", "--version", version, "--group", group)
	}
	dir := watchNATS(t, url, bucket, service, "", "")
	a, aAddr := serve("A", "1", "green")
	serve("B", "1", "green")
	serve("X", "1", "blue")
	serve("Y", "2", "green")
	waitProviders(t, dir, 4, 2*time.Second)

	const timeout = 2 * time.Second
	cdir := writeFiles(t, map[string]string{
		"in.jsonl":  "",
		"conns.yml": followIn + fileSink + "---\n" + natsPricing(url, service, bucket, fmt.Sprintf("  version: \"1\"\n  group: green\n  loadbalance: consistent_hash\n  retries: 2\n  timeout: %s\n", timeout)),
		"flow.yml":  remotePrice + "---\n" + ordersFlow + "stream:\n  source: in\n  sink: out\n  key: user\n  batch_size: 40\n  linger: 5ms\n"})
	run := start(t, "run", cdir, "--log-level", "info", "--progress", "never")
	in, err := os.OpenFile(filepath.Join(cdir, "in.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	const users = 60
	next := 0
	write := func(n int) (first int) {
		first = next
		for i := 0; i < n; i += 20 {
			var buf bytes.Buffer
			for j := 0; j < 20; j++ {
				fmt.Fprintf(&buf, "{\"id\":%d,\"user\":\"u%d\",\"amount\":%d}\n", next, next%users, next)
				next++
			}
			if _, err := in.Write(buf.Bytes()); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		return first
	}
	// waitRow waits for row id to come out and returns the rows by id.
	waitRow := func(id int, within time.Duration) map[int][]byRow {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			rows := readByRows(t, cdir)
			if len(rows[id]) > 0 {
				return rows
			}
			if time.Now().After(deadline) {
				t.Fatalf("row %d did not come out within %s: %s", id, within, run.output())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// Phase 1: A and B.
	write(1200)
	rows := waitRow(next-1, 30*time.Second)
	before := owners(t, rows, 0, next, "phase 1")
	if got := providersOf(before); got != "A,B" {
		t.Fatalf("phase 1: users went to %s, want A and B only (X is group blue, Y version 2)", got)
	}

	// A is killed mid-stream, still registered: the rows after it come out
	// within the timeout.
	_ = a.cmd.Process.Kill()
	killed := time.Now()
	first := write(200)
	waitRow(first, timeout)
	t.Logf("the first row written after the kill came out %s after it", time.Since(killed))

	// C joins mid-stream; A's registration expires.
	_, cAddr := serve("C", "1", "green")
	deadline := time.Now().Add(10 * time.Second)
	for {
		ps := dir.Providers()
		if slices.ContainsFunc(ps, func(p remote.Provider) bool { return p.Addr == cAddr }) &&
			!slices.ContainsFunc(ps, func(p remote.Provider) bool { return p.Addr == aAddr }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("providers %+v: A's registration did not expire", ps)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // the flow's directory follows the same watch
	last := write(1200)
	rows = waitRow(next-1, 30*time.Second)
	after := owners(t, rows, last, next, "last phase")
	if got := providersOf(after); got != "B,C" {
		t.Fatalf("last phase: users went to %s, want B and C (C joined, A was killed)", got)
	}
	moved := 0
	for u, was := range before {
		now := after[u]
		if was == "B" && now != "B" && now != "C" {
			t.Errorf("user %s moved from B to %s: only moves to the new provider are allowed", u, now)
		}
		if was != now {
			moved++
		}
	}
	t.Logf("%d of %d users moved (A's and those C took)", moved, len(before))

	// No row lost; every row computed.
	for id := range next {
		if len(rows[id]) == 0 {
			t.Fatalf("row %d lost", id)
		}
	}
	for _, rs := range rows {
		for _, r := range rs {
			if r.By == "X" || r.By == "Y" {
				t.Fatalf("row %d computed by %s, of another group or version", r.ID, r.By)
			}
		}
	}
	_ = run.cmd.Process.Signal(syscall.SIGTERM)
	if code := run.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("run exited %d: %s", code, run.output())
	}
	if !strings.Contains(run.output(), "remote call failed over") {
		t.Fatalf("no call failed over after the kill: %s", run.output())
	}
}

type byRow struct {
	ID, Amount, Price int
	User, By          string
}

func readByRows(t *testing.T, dir string) map[int][]byRow {
	t.Helper()
	out := map[int][]byRow{}
	data, _ := os.ReadFile(filepath.Join(dir, "out.jsonl"))
	for _, l := range bytes.Split(data, []byte("\n")) {
		var r byRow
		if len(l) == 0 || json.Unmarshal(l, &r) != nil {
			continue // a line being written
		}
		if r.Price != 2*r.Amount || r.By == "" {
			t.Fatalf("row %s: not computed by a provider", l)
		}
		out[r.ID] = append(out[r.ID], r)
	}
	return out
}

// owners returns the provider of each user over the rows [from, to),
// failing when a user's rows went to more than one.
func owners(t *testing.T, rows map[int][]byRow, from, to int, phase string) map[string]string {
	t.Helper()
	own := map[string]string{}
	for id := from; id < to; id++ {
		for _, r := range rows[id] {
			if o, ok := own[r.User]; ok && o != r.By {
				t.Fatalf("%s: user %s went to %s and %s while the providers did not change", phase, r.User, o, r.By)
			}
			own[r.User] = r.By
		}
	}
	return own
}

func providersOf(own map[string]string) string {
	set := map[string]bool{}
	for _, p := range own {
		set[p] = true
	}
	return strings.Join(slices.Sorted(maps.Keys(set)), ",")
}

// bothDeliveries are the sinks the process tests write to: a file
// at-least-once and SQLite exactly-once.
var bothDeliveries = []struct{ name, sink, delivery string }{
	{"at-least-once", fileSink, "at-least-once"},
	{"exactly-once", "kistype: conn\ncname: out\ntype: sqlite\nkey: out\nparams:\n  path: out.db\n  create: \"true\"\n  columns: id,amount,price\n", "exactly-once"},
}
