// Package all installs every connector type the stock kisflow binary ships
// with into a registry. A project's own binary imports it and adds its own
// connector types beside them:
//
//	reg := kisflow.NewRegistry()
//	if err := all.Install(reg); err != nil { ... }
//	if err := reg.RegisterConnector(mine.Spec, mine.New); err != nil { ... }
package all

import (
	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/connector/amqp"
	"github.com/kisflow-go/kisflow/connector/file"
	"github.com/kisflow-go/kisflow/connector/generator"
	"github.com/kisflow-go/kisflow/connector/http"
	"github.com/kisflow-go/kisflow/connector/kafka"
	"github.com/kisflow-go/kisflow/connector/memory"
	"github.com/kisflow-go/kisflow/connector/mqtt"
	"github.com/kisflow-go/kisflow/connector/mysqlcdc"
	"github.com/kisflow-go/kisflow/connector/nats"
	"github.com/kisflow-go/kisflow/connector/pgcdc"
	"github.com/kisflow-go/kisflow/connector/redis"
	"github.com/kisflow-go/kisflow/connector/remote"
	"github.com/kisflow-go/kisflow/connector/sql"
)

// Install registers every bundled connector type (and the client plugin
// types of redis, nats and sql) in reg.
func Install(reg *kisflow.Registry) error {
	// Connector packages install through driver.Registrar; those with a
	// shared client plugin need the registry itself.
	for _, install := range []func() error{
		func() error { return memory.Install(reg) },
		func() error { return file.Install(reg) },
		func() error { return generator.Install(reg) },
		func() error { return http.Install(reg) },
		func() error { return sql.Install(reg) },
		func() error { return pgcdc.Install(reg) },
		func() error { return mysqlcdc.Install(reg) },
		func() error { return redis.Install(reg) },
		func() error { return nats.Install(reg) },
		func() error { return kafka.Install(reg) },
		func() error { return amqp.Install(reg) },
		func() error { return mqtt.Install(reg) },
		func() error { return remote.Install(reg) },
	} {
		if err := install(); err != nil {
			return err
		}
	}
	return nil
}
