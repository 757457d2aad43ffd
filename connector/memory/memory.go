// Package memory is an in-memory connector for tests and examples: a
// key-value map and append-only tables, shared by every flow that uses the
// connector. Register it with Install and configure it as `type: memory`.
package memory

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver"
)

// Type is the connector type this package registers.
const Type = "memory"

// Install registers the memory driver in reg.
func Install(reg driver.Registrar) error {
	return reg.RegisterConnector(Spec, New)
}

type params struct {
	FailStart bool `param:"fail_start" default:"false" doc:"make Start fail, for tests of start-up errors"`
}

// Spec declares the memory connector's params.
var Spec = driver.MustSpec[params](Type, "an in-memory key-value map and append-only tables, for tests and examples")

// ErrNotStarted is returned by a Store used before Start or after Close.
var ErrNotStarted = errors.New("memory connector is not started")

// Store is the memory driver. Its methods are safe for concurrent use.
type Store struct {
	cfg       *config.Conn
	failStart bool
	mu        sync.Mutex
	started   bool
	starts    int
	closes    int
	kv        map[string]any
	tables    map[string][]any
}

// New builds a Store from its connector config.
func New(cfg *config.Conn) (driver.Driver, error) {
	var p params
	if err := Spec.Decode(cfg, &p); err != nil {
		return nil, err
	}
	return &Store{cfg: cfg, failStart: p.FailStart}, nil
}

// Start makes the store usable.
func (s *Store) Start(context.Context) error {
	if s.failStart {
		return fmt.Errorf("memory connector %q: fail_start is set", s.cfg.CName)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.started = true
	s.starts++
	s.kv = map[string]any{}
	s.tables = map[string][]any{}
	return nil
}

// Close drops the data.
func (s *Store) Close(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.started = false
	s.closes++
	return nil
}

// Starts and Closes count the calls of Start and Close.
func (s *Store) Starts() int { s.mu.Lock(); defer s.mu.Unlock(); return s.starts }

// Closes counts the calls of Close.
func (s *Store) Closes() int { s.mu.Lock(); defer s.mu.Unlock(); return s.closes }

// Put sets key to value.
func (s *Store) Put(key string, value any) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		return ErrNotStarted
	}
	s.kv[key] = value
	return nil
}

// Get returns the value of key.
func (s *Store) Get(key string) (any, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		return nil, false, ErrNotStarted
	}
	v, ok := s.kv[key]
	return v, ok, nil
}

// Append adds rows to a table (the connector's `key` when table is "").
func (s *Store) Append(table string, rows ...any) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		return ErrNotStarted
	}
	if table == "" {
		table = s.cfg.Key
	}
	s.tables[table] = append(s.tables[table], rows...)
	return nil
}

// Rows returns a copy of a table's rows (the connector's `key` when table is "").
func (s *Store) Rows(table string) []any {
	s.mu.Lock()
	defer s.mu.Unlock()
	if table == "" {
		table = s.cfg.Key
	}
	return slices.Clone(s.tables[table])
}

// Call is the default Save: for a Save function it appends args (a row,
// or a []any of rows) to the connector's `key` table and returns nil. For
// a function of another mode it writes nothing and returns an error, as
// the default Call of a sink connector (type file) does: register a
// callback (Registry.RegisterConnFunc) for a Load.
func (s *Store) Call(_ context.Context, c *kisflow.Connector, f kisflow.Flow, args any) (any, error) {
	if fn := f.Function(); fn == nil || fn.Mode() != config.Save {
		name, mode := "", config.Mode("")
		if fn != nil {
			name, mode = fn.Name(), fn.Mode()
		}
		return nil, fmt.Errorf("connector %q (type %s): function %q has fmode %s; this type's default Call serves Save functions only (register a callback with Registry.RegisterConnFunc)", c.Name(), c.Type(), name, mode)
	}
	if rows, ok := args.([]any); ok {
		return nil, s.Append("", rows...)
	}
	return nil, s.Append("", args)
}
