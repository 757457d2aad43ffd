package driver

import (
	"context"

	"github.com/kisflow-go/kisflow/config"
)

// Driver is the implementation behind a connector: the client of one
// external system. A connector's driver is started once, shared by every
// flow that uses it, and closed once when the engine closes. A driver adds
// capabilities by implementing the interfaces listed in the package
// documentation; callers find them by type assertion.
type Driver interface {
	Start(ctx context.Context) error
	Close(ctx context.Context) error
}

// Factory builds the driver of a connector from its config. It must not
// connect yet; Start does. A bad config is an error (lint reports it with
// the connector's file and line, since it calls the factory without
// starting what it builds).
type Factory func(cfg *config.Conn) (Driver, error)

// Registrar is where a connector package installs its type: a
// *kisflow.Registry. A connector package needs nothing else of the
// engine.
type Registrar interface {
	RegisterConnector(spec *Spec, f Factory) error
}

// Listener is an optional capability of a driver that listens for
// connections (the http source): ListenAddr is the host:port its config
// asks it to listen on, before it does, so that lint can refuse an
// address another listener of the configuration (the admin server) takes.
type Listener interface {
	ListenAddr() string
}

// Identifier is an optional capability of a source driver: Identity names
// what the source reads by something that outlives the names its config
// gives it, so that the key of a flow's position (kisflow.StateKey) stays
// the same when they change but the source does not. The file driver
// names its file by its folder's device and inode and its own name, which
// a move of the configuration folder keeps. "" means the driver cannot
// tell (yet): the key is then made from the config.
type Identifier interface {
	Identity() string
}
