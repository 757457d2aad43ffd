package kisflow_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/internal/testenv"
)

// echoDriver fails to start with an error that echoes its password bare,
// as some servers and libraries do.
type echoDriver struct{ cfg *config.Conn }

func (d *echoDriver) Start(context.Context) error {
	return errors.New("server refused password " + d.cfg.Params["password"])
}

func (d *echoDriver) Close(context.Context) error { return nil }

// The engine keeps a connector's secrets out of the error of a failed
// start and out of every record of its logger, whatever the driver prints.
func TestEngineRedactsConnectorErrorsAndLogs(t *testing.T) {
	t.Setenv("KISFLOW_TEST_ECHO_PASSWORD", "EnvEcho55")
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	reg := kisflow.NewRegistry()
	if err := reg.RegisterDriver("echo", func(cfg *config.Conn) (kisflow.Driver, error) {
		return &echoDriver{cfg: cfg}, nil
	}); err != nil {
		t.Fatal(err)
	}
	eng := testenv.Engine(t, reg, map[string]string{"conn.yml": `kistype: conn
cname: db
type: echo
addrs: redis://app:UrlPw55@127.0.0.1:1/0
params:
  password: ${KISFLOW_TEST_ECHO_PASSWORD}
  dsn: root:DsnPw55@tcp(127.0.0.1:1)/test
`}, kisflow.WithLogger(log))
	_, err := eng.Connector(context.Background(), "db")
	if err == nil {
		t.Fatal("the connector started")
	}
	// What drivers and sources log goes through the engine's logger.
	eng.Logger().Error("dialing", "addr", "redis://app:UrlPw55@127.0.0.1:1/0", "dsn", "root:DsnPw55@tcp(127.0.0.1:1)/test",
		"password", "EnvEcho55", "err", errors.New("auth EnvEcho55 refused"))
	for _, secret := range []string{"EnvEcho55", "UrlPw55", "DsnPw55"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("start error holds %s: %v", secret, err)
		}
		if strings.Contains(logs.String(), secret) {
			t.Errorf("log holds %s:\n%s", secret, logs.String())
		}
	}
	if !strings.Contains(err.Error(), `connector "db"`) || !strings.Contains(err.Error(), "refused password xxxxx") {
		t.Errorf("start error lost its context: %v", err)
	}
}
