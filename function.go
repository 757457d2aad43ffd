package kisflow

import (
	"fmt"

	"github.com/kisflow-go/kisflow/config"
)

// Function is one step of a flow instance: its config, its merged params,
// its connector, and a cache and metadata of its own. Inside a function,
// Flow.Function returns the running one.
type Function struct {
	store
	cfg    *config.Func
	index  int
	params map[string]string
	conn   *Connector
}

// Name is the function's fname.
func (fn *Function) Name() string { return fn.cfg.FName }

// Mode is the function's fmode.
func (fn *Function) Mode() config.Mode { return fn.cfg.FMode }

// Config is the function's configuration. Do not modify it.
func (fn *Function) Config() *config.Func { return fn.cfg }

// Index is the function's position in its flow, from 0.
func (fn *Function) Index() int { return fn.index }

// Param returns one param: the flow's value for this step if set, else the
// function's default_params value, else "".
func (fn *Function) Param(key string) string { return fn.params[key] }

// Params returns all params merged as Param does. Do not modify the map.
func (fn *Function) Params() map[string]string { return fn.params }

// Connector returns the function's connector (option.cname), started.
func (fn *Function) Connector() (*Connector, error) {
	if fn.conn == nil {
		return nil, fmt.Errorf("function %q: %w", fn.Name(), ErrNoConnector)
	}
	return fn.conn, nil
}
