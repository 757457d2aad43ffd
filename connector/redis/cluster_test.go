package redis

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/internal/testenv"
	"github.com/kisflow-go/kisflow/stream"
)

// privateCluster starts a Redis cluster of three masters on free ports of
// its own and returns their addresses once the cluster serves. It skips
// when redis-server or redis-cli is not installed.
func privateCluster(t *testing.T) []string {
	t.Helper()
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s is not installed: no private cluster", bin)
		}
	}
	dir := t.TempDir()
	var addrs []string
	for range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		p := strconv.Itoa(port)
		cmd := exec.Command("redis-server", "--port", p, "--bind", "127.0.0.1", "--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, "nodes-"+p+".conf"), "--dir", dir, "--save", "", "--appendonly", "no",
			"--logfile", filepath.Join(dir, p+".log"))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		addr := "127.0.0.1:" + p
		addrs = append(addrs, addr)
		waitFor(t, "node "+addr+" answering", func() bool {
			c := goredis.NewClient(&goredis.Options{Addr: addr})
			defer c.Close()
			return c.Ping(context.Background()).Err() == nil
		})
	}
	create := exec.Command("redis-cli", append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "0", "--cluster-yes")...)
	if out, err := create.CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, addr := range addrs {
		waitFor(t, "cluster state ok on "+addr, func() bool {
			c := goredis.NewClient(&goredis.Options{Addr: addr})
			defer c.Close()
			info, err := c.ClusterInfo(context.Background()).Result()
			return err == nil && strings.Contains(info, "cluster_state:ok")
		})
	}
	return addrs
}

// waitFor polls cond every 20ms for up to 20s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 20s", what)
		}
	}
}

// Several addrs are a cluster: rows are saved across its slots, a stream
// is read through it, and an exactly-once batch whose keys span slots is a
// configuration error that ends the job.
func TestClusterAddrs(t *testing.T) {
	t.Parallel()
	addrs := privateCluster(t)
	ctx := context.Background()
	prefix := testenv.Name("kisflow-test-")
	newConn := func(key string, params map[string]string) *Redis {
		d, err := New(&config.Conn{CName: "c", Type: Type, Addrs: strings.Join(addrs, ","), Key: key, Params: params})
		if err != nil {
			t.Fatal(err)
		}
		r := d.(*Redis)
		if err := r.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Close(ctx) })
		return r
	}
	sink := newConn(prefix+"user:{id}", map[string]string{"mode": "hash"})
	if _, ok := sink.Client().(*goredis.ClusterClient); !ok {
		t.Fatalf("three addrs made a %T, want a cluster client", sink.Client())
	}
	const n = 50
	rows := make([]any, n)
	for i := range rows {
		rows[i] = map[string]any{"id": i, "name": fmt.Sprint("u", i)}
	}
	if err := sink.Write(ctx, rows); err != nil {
		t.Fatal(err)
	}
	nodes := map[string]bool{}
	for i := range n {
		key := fmt.Sprintf("%suser:%d", prefix, i)
		if got := sink.Client().HGet(ctx, key, "name").Val(); got != fmt.Sprint("u", i) {
			t.Fatalf("%s: name %q", key, got)
		}
		slot := sink.Client().ClusterKeySlot(ctx, key).Val()
		nodes[fmt.Sprint(slot*3/16384)] = true // redis-cli splits the slots evenly
	}
	if len(nodes) < 2 {
		t.Fatalf("the %d keys landed in the slots of %d node(s); the test needs several", n, len(nodes))
	}
	src := newConn(prefix+"events", map[string]string{"mode": "stream", "block": "20ms"})
	if err := src.Write(ctx, rows); err != nil {
		t.Fatal(err)
	}
	s, err := src.OpenSource(ctx, stream.SourceOptions{Name: "g"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	got := drain(t, s.(*source), 20, 200*time.Millisecond)
	if ids := once(t, got); len(ids) != n {
		t.Fatalf("read %d entries through the cluster, want %d", len(ids), n)
	}
	if err := s.Ack(ctx, got); err != nil {
		t.Fatal(err)
	}
	err = sink.CommitBatch(ctx, "f", "1", []string{"a"}, rows[:2])
	if !stream.IsFatal(err) || !strings.Contains(err.Error(), "share one slot") {
		t.Fatalf("an exactly-once batch across slots: %v, want a fatal error saying why", err)
	}
}
