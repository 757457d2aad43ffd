package testenv

import (
	"strings"
	"testing"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver"
)

// RefusesParams builds a driver with factory from cfg and fails t unless
// the factory refuses cfg with an error that holds every one of wants (a
// connector's spec names each bad param, a misspelt one with the closest
// declared name).
func RefusesParams(t testing.TB, factory driver.Factory, cfg *config.Conn, wants ...string) {
	t.Helper()
	d, err := factory(cfg)
	if err == nil {
		t.Fatalf("params %v: no error, built %T", cfg.Params, d)
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("the error lacks %q:\n%v", w, err)
		}
	}
}
