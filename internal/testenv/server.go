package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Server is a private instance of a service, started by a test on a free
// port with a data folder of its own, so that the test can restart it
// without disturbing other tests.
type Server struct {
	name string
	bin  string
	args func(port int, dir string) []string
	port int
	dir  string
	cmd  *exec.Cmd
}

// PrivateRedis is a redis-server keeping an append-only file, so its data
// survives a restart.
func PrivateRedis(t *testing.T) *Server {
	return startServer(t, "redis-server", "redis-server", func(port int, dir string) []string {
		return []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
			"--appendfsync", "always", "--dir", dir, "--logfile", filepath.Join(dir, "redis.log")}
	})
}

// PrivateNATS is a nats-server with JetStream storing on disk.
func PrivateNATS(t *testing.T) *Server {
	return startServer(t, "nats-server", "nats-server", func(port int, dir string) []string {
		return []string{"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", dir, "-l", filepath.Join(dir, "nats.log")}
	})
}

func startServer(t *testing.T, name, bin string, args func(int, string) []string) *Server {
	t.Helper()
	path, err := exec.LookPath(bin)
	if err != nil {
		msg := name + " (" + bin + ") is not installed, so the restart test cannot run"
		if os.Getenv("KISFLOW_INTEGRATION") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s := &Server{name: name, bin: path, args: args, port: port, dir: t.TempDir()}
	s.start(t)
	t.Cleanup(func() { s.stop() })
	return s
}

// Port is the port the server listens on.
func (s *Server) Port() int { return s.port }

func (s *Server) start(t *testing.T) {
	t.Helper()
	s.cmd = exec.Command(s.bin, s.args(s.port, s.dir)...)
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", s.name, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not come up on port %d", s.name, s.port)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *Server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
	s.cmd = nil
}

// Restart stops the server (as a service manager would) and starts it
// again on the same port with the same data.
func (s *Server) Restart(t *testing.T) {
	t.Helper()
	s.stop()
	s.start(t)
}
