package testenv

import (
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
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
	// env, when set, adds variables to the server's environment.
	env func(port int, dir string) []string
	// boot bounds how long the server may take to listen (default 20s).
	boot time.Duration
	// stopSignal stops the server gracefully (default SIGTERM).
	stopSignal syscall.Signal
	// ready, when set, says whether the listening server serves yet.
	ready func(port int) error
	// cred runs the server as another user (PostgreSQL refuses root).
	cred *syscall.Credential
	port int
	dir  string
	cmd  *exec.Cmd
}

// PrivateRedis is a redis-server keeping an append-only file, so its data
// survives a restart.
func PrivateRedis(t testing.TB) *Server {
	return startServer(t, "redis-server", "redis-server", func(port int, dir string) []string {
		return []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
			"--appendfsync", "always", "--dir", dir, "--logfile", filepath.Join(dir, "redis.log")}
	})
}

// PrivateNATS is a nats-server with JetStream storing on disk.
func PrivateNATS(t testing.TB) *Server {
	return startServer(t, "nats-server", "nats-server", func(port int, dir string) []string {
		return []string{"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", dir, "-l", filepath.Join(dir, "nats.log")}
	})
}

// PrivateMosquitto is a mosquitto broker persisting sessions, their
// subscriptions and queued messages on disk (written at shutdown and every
// second), so they survive a restart. Started as root, mosquitto drops to
// its own user unless told to stay: it then could not write the test's data
// folder, and would restart with no sessions.
func PrivateMosquitto(t testing.TB) *Server {
	return startServer(t, "Mosquitto", "mosquitto", func(port int, dir string) []string {
		conf := filepath.Join(dir, "mosquitto.conf")
		body := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\nautosave_interval 1\nlog_dest file %s\n",
			port, dir, filepath.Join(dir, "mosquitto.log"))
		if u, err := user.Current(); err == nil {
			body += "user " + u.Username + "\n"
		}
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return []string{"-c", conf}
	})
}

// PrivatePostgres is a PostgreSQL server of its own (initdb into the test's
// folder, trust authentication, user postgres), so the test can restart it.
// Its URL: postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable.
// settings are more server settings (NAME=VALUE, given as -c), such as
// wal_level=logical for logical replication.
func PrivatePostgres(t testing.TB, settings ...string) *Server {
	bin := "postgres"
	if found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres"); len(found) > 0 {
		sort.Strings(found)
		bin = found[len(found)-1]
	}
	s := newServer(t, "PostgreSQL", bin, func(port int, dir string) []string {
		args := []string{"-D", filepath.Join(dir, "data"), "-p", strconv.Itoa(port), "-k", dir,
			"-c", "listen_addresses=127.0.0.1", "-c", "logging_collector=off"}
		for _, s := range settings {
			args = append(args, "-c", s)
		}
		return args
	})
	s.runAs(t, "postgres")
	// SIGTERM is PostgreSQL's "smart" shutdown, which waits for every
	// client to leave; service managers use "fast" (SIGINT).
	s.stopSignal = syscall.SIGINT
	// PostgreSQL listens before it accepts sessions ("starting up").
	s.ready = func(port int) error {
		db, err := sql.Open("pgx", fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=1", port))
		if err != nil {
			return err
		}
		defer db.Close()
		return db.Ping()
	}
	s.prepare(t, exec.Command(filepath.Join(filepath.Dir(s.bin), "initdb"), "-D", filepath.Join(s.dir, "data"),
		"-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"))
	s.launch(t)
	return s
}

// PrivateMariaDB is a MariaDB server of its own (a data folder installed in
// the test's folder, root with no password), so the test can restart it.
// Its DSN: root@tcp(127.0.0.1:PORT)/. settings are more server options
// (--name=value), such as --log-bin for change data capture.
func PrivateMariaDB(t testing.TB, settings ...string) *Server {
	s := newServer(t, "MariaDB", "mariadbd", func(port int, dir string) []string {
		args := []string{"--no-defaults", "--datadir=" + filepath.Join(dir, "data"), "--port=" + strconv.Itoa(port),
			"--bind-address=127.0.0.1", "--socket=" + filepath.Join(dir, "mysqld.sock"), "--pid-file=" + filepath.Join(dir, "mariadb.pid"),
			"--log-error=" + filepath.Join(dir, "mariadb.log"), "--user=" + currentUser(), "--skip-name-resolve",
			"--tmpdir=" + filepath.Join(dir, "tmp")}
		return append(args, settings...)
	})
	// A temporary folder of its own: installs running side by side in the
	// shared /tmp lost each other's temporary tables ("Could not remove
	// temporary table", "Unknown table 'mysql.tmp_user_nopasswd'").
	if err := os.Mkdir(filepath.Join(s.dir, "tmp"), 0o700); err != nil {
		t.Fatal(err)
	}
	install, err := exec.LookPath("mariadb-install-db")
	if err != nil {
		install = "mysql_install_db"
	}
	s.prepare(t, exec.Command(install, "--no-defaults", "--datadir="+filepath.Join(s.dir, "data"),
		"--user="+currentUser(), "--auth-root-authentication-method=normal", "--skip-test-db", "--tmpdir="+filepath.Join(s.dir, "tmp")))
	s.launch(t)
	return s
}

func currentUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return "root"
}

// runAs makes the server run as the named user when the test runs as root,
// in a data folder that user owns.
func (s *Server) runAs(t testing.TB, name string) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("%s must not run as root and there is no %s user: %v", s.name, name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	// t.TempDir's parent is closed to other users: a folder of its own.
	dir, err := os.MkdirTemp("", "kisflow-"+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	s.dir = dir
	s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

// prepare runs a set-up command (initdb) as the server's user.
func (s *Server) prepare(t testing.TB, cmd *exec.Cmd) {
	t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
}

// PrivateRabbitMQ is a RabbitMQ node of its own (node name, ports, database
// and logs in the test's folder), so durable queues and persistent
// messages survive its restart. It takes 15-30 seconds to boot, and minutes on a loaded machine.
func PrivateRabbitMQ(t testing.TB) *Server {
	distPort := freePort(t)
	s := newServer(t, "RabbitMQ", "/usr/lib/rabbitmq/bin/rabbitmq-server", func(int, string) []string { return nil })
	s.boot = 180 * time.Second // 90s was not enough on a loaded two-core machine
	s.env = func(port int, dir string) []string {
		plugins := filepath.Join(dir, "enabled_plugins")
		if err := os.WriteFile(plugins, []byte("[].\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return []string{
			"HOME=" + dir, // its Erlang cookie
			fmt.Sprintf("RABBITMQ_NODENAME=kisflow-test-%d@localhost", port),
			"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
			"RABBITMQ_NODE_PORT=" + strconv.Itoa(port),
			"RABBITMQ_DIST_PORT=" + strconv.Itoa(distPort),
			"RABBITMQ_MNESIA_BASE=" + filepath.Join(dir, "mnesia"),
			"RABBITMQ_LOG_BASE=" + dir,
			"RABBITMQ_ENABLED_PLUGINS_FILE=" + plugins,
			"RABBITMQ_CONFIG_FILE=" + filepath.Join(dir, "rabbitmq"),
			"RABBITMQ_ADVANCED_CONFIG_FILE=" + filepath.Join(dir, "advanced.config"),
			"RABBITMQ_PID_FILE=" + filepath.Join(dir, "pid"),
		}
	}
	s.launch(t)
	return s
}

func startServer(t testing.TB, name, bin string, args func(int, string) []string) *Server {
	t.Helper()
	s := newServer(t, name, bin, args)
	s.launch(t)
	return s
}

// freePort returns a port nothing listens on now.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// newServer finds the binary (skipping, or failing under
// KISFLOW_INTEGRATION=1, when it is not installed) and picks a port.
func newServer(t testing.TB, name, bin string, args func(int, string) []string) *Server {
	t.Helper()
	path, err := exec.LookPath(bin)
	if err != nil && !strings.Contains(bin, "/") {
		// Server binaries live in sbin, which a user's PATH may lack.
		for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
			if p, lerr := exec.LookPath(filepath.Join(dir, bin)); lerr == nil {
				path, err = p, nil
				break
			}
		}
	}
	if err != nil {
		msg := name + " (" + bin + ") is not installed, so the restart test cannot run"
		if os.Getenv("KISFLOW_INTEGRATION") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return &Server{name: name, bin: path, args: args, port: freePort(t), dir: t.TempDir(), boot: 20 * time.Second}
}

// launch starts the server and stops it when the test ends.
func (s *Server) launch(t testing.TB) {
	t.Helper()
	s.start(t)
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			s.logTail(t)
		}
	})
}

// logTail shows the end of the server's log files when a test failed: a
// service that could not write its data tells it there.
func (s *Server) logTail(t testing.TB) {
	logs, _ := filepath.Glob(filepath.Join(s.dir, "*.log"))
	for _, l := range logs {
		data, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		if len(data) > 4000 {
			data = data[len(data)-4000:]
		}
		t.Logf("%s log %s (end):\n%s", s.name, filepath.Base(l), data)
	}
}

// Port is the port the server listens on.
func (s *Server) Port() int { return s.port }

func (s *Server) start(t testing.TB) {
	t.Helper()
	s.cmd = exec.Command(s.bin, s.args(s.port, s.dir)...)
	// Crash dumps (RabbitMQ's MnesiaCore files) go to the server's folder,
	// not the test's package.
	s.cmd.Dir = s.dir
	if s.env != nil {
		s.cmd.Env = append(os.Environ(), s.env(s.port, s.dir)...)
	}
	// A group of its own: a server started by a script (RabbitMQ) is
	// stopped with its children.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: s.cred}
	// What the server prints goes to server.log, shown if the test fails.
	if out, err := os.OpenFile(filepath.Join(s.dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
		s.cmd.Stdout, s.cmd.Stderr = out, out
		defer out.Close() // the child has its own copy
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", s.name, err)
	}
	deadline := time.Now().Add(s.boot)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			if s.ready == nil {
				return
			}
			if err = s.ready(s.port); err == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			s.stop() // not left running after the test, as a late boot would be
			t.Fatalf("%s did not come up on port %d: %v", s.name, s.port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *Server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	pgid := s.cmd.Process.Pid
	sig := s.stopSignal
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	_ = syscall.Kill(-pgid, sig)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
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

// Stop stops the server (as a service manager would) until Start: its port
// is closed meanwhile.
func (s *Server) Stop() { s.stop() }

// Start starts a server stopped by Stop again, on the same port with the
// same data. It returns once the server accepts connections again.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	s.start(t)
}

// Down stops the server, keeps it stopped for d (an outage of that
// length), and starts it again on the same port with the same data. It
// returns once the server accepts connections again.
func (s *Server) Down(t *testing.T, d time.Duration) {
	t.Helper()
	s.stop()
	time.Sleep(d)
	s.start(t)
}

// Crash SIGKILLs the server (no clean shutdown), keeps it down for d, and
// starts it again on the same port with the same data. It returns once the
// server accepts connections again.
func (s *Server) Crash(t *testing.T, d time.Duration) {
	t.Helper()
	sig := s.stopSignal
	s.stopSignal = syscall.SIGKILL
	s.stop()
	s.stopSignal = sig
	time.Sleep(d)
	s.start(t)
}

// CrashLosingData SIGKILLs the server, deletes its data (everything in its
// folder but the logs), keeps it down for d, and starts it again on the
// same port, empty: a server on a volume that does not persist.
func (s *Server) CrashLosingData(t *testing.T, d time.Duration) {
	t.Helper()
	sig := s.stopSignal
	s.stopSignal = syscall.SIGKILL
	s.stop()
	s.stopSignal = sig
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".log") {
			if err := os.RemoveAll(filepath.Join(s.dir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	time.Sleep(d)
	s.start(t)
}
