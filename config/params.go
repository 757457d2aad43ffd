package config

import (
	"fmt"
	"strconv"
	"time"
)

// ParamDuration returns the connector param name as a duration ("250ms",
// "2s"), or def when the param is absent. A value that does not parse or is
// below min is an error naming the param.
func (c *Conn) ParamDuration(name string, def, min time.Duration) (time.Duration, error) {
	s := c.Params[name]
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < min {
		return 0, fmt.Errorf("bad %s %q (want a duration of at least %v, such as 500ms or 2s)", name, s, min)
	}
	return d, nil
}

// ParamInt returns the connector param name as an integer, or def when the
// param is absent. A value that does not parse or is below min is an error
// naming the param.
func (c *Conn) ParamInt(name string, def, min int) (int, error) {
	s := c.Params[name]
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < min {
		return 0, fmt.Errorf("bad %s %q (want a whole number of at least %d)", name, s, min)
	}
	return n, nil
}
