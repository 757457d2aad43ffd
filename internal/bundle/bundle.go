// Package bundle installs the components the stock kisflow binary ships
// with into a registry.
package bundle

import (
	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/connector/amqp"
	"github.com/kisflow-go/kisflow/connector/file"
	"github.com/kisflow-go/kisflow/connector/generator"
	"github.com/kisflow-go/kisflow/connector/http"
	"github.com/kisflow-go/kisflow/connector/kafka"
	"github.com/kisflow-go/kisflow/connector/memory"
	"github.com/kisflow-go/kisflow/connector/mqtt"
	"github.com/kisflow-go/kisflow/connector/nats"
	"github.com/kisflow-go/kisflow/connector/redis"
	"github.com/kisflow-go/kisflow/connector/sql"
)

// Install registers every bundled connector type in reg.
func Install(reg *kisflow.Registry) error {
	for _, install := range []func(*kisflow.Registry) error{
		memory.Install, file.Install, generator.Install, http.Install, sql.Install, redis.Install, nats.Install, kafka.Install, amqp.Install, mqtt.Install,
	} {
		if err := install(reg); err != nil {
			return err
		}
	}
	return nil
}
