// Package testenv finds the external services connector tests talk to.
// Addresses come from environment variables with the local defaults. When a
// service does not answer, the test is skipped with a message naming it, or
// fails when KISFLOW_INTEGRATION=1 (as in CI), so CI never passes by
// skipping.
package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

// Service is an external service with its address variable and default.
type Service struct {
	Name    string // as people call it
	Env     string // the variable that overrides the address
	Default string
}

// The services of this machine.
var (
	Redis    = Service{"Redis", "KISFLOW_REDIS_ADDR", "127.0.0.1:6379"}
	NATS     = Service{"NATS JetStream", "KISFLOW_NATS_URL", "nats://127.0.0.1:4222"}
	Postgres = Service{"PostgreSQL", "KISFLOW_PG_URL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"}
	MySQL    = Service{"MariaDB/MySQL", "KISFLOW_MYSQL_DSN", "root@tcp(127.0.0.1:3306)/test"}
	RabbitMQ = Service{"RabbitMQ", "KISFLOW_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"}
	MQTT     = Service{"Mosquitto MQTT", "KISFLOW_MQTT_URL", "tcp://127.0.0.1:1883"}
)

// Addr returns the service's address, after checking that something
// answers there.
func (s Service) Addr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv(s.Env)
	if addr == "" {
		addr = s.Default
	}
	hostport := hostPort(addr)
	conn, err := net.DialTimeout("tcp", hostport, 2*time.Second)
	if err != nil {
		msg := s.Name + " is not reachable at " + hostport + " (set " + s.Env + "): " + err.Error()
		if os.Getenv("KISFLOW_INTEGRATION") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	conn.Close()
	return addr
}

// hostPort extracts host:port from a URL, a MySQL DSN or a plain address.
func hostPort(addr string) string {
	if u, err := url.Parse(addr); err == nil && u.Host != "" {
		return u.Host
	}
	if i := strings.Index(addr, "tcp("); i >= 0 {
		rest := addr[i+4:]
		if j := strings.IndexByte(rest, ')'); j >= 0 {
			return rest[:j]
		}
	}
	return addr
}

// Name returns a name unique to this test run: prefix plus random hex, safe
// for keys, streams, topics, queues and database names.
func Name(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}
