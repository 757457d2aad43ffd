package config

import (
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
)

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// expandEnv replaces ${VAR} and ${VAR:-default} with the environment's
// values. It returns the names of variables that are unset and have no
// default (they expand to "").
func expandEnv(s string, lookup func(string) (string, bool)) (string, []string) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var missing []string
	out := envRef.ReplaceAllStringFunc(s, func(ref string) string {
		m := envRef.FindStringSubmatch(ref)
		if v, ok := lookup(m[1]); ok && v != "" {
			return v
		}
		if m[2] != "" {
			return m[3]
		}
		missing = append(missing, m[1])
		return ""
	})
	return out, missing
}

// Expanded returns a copy of c with ${VAR} and ${VAR:-default} in addrs,
// key and params replaced from the environment. The model itself keeps the
// references, so exports and logs never hold the values. A variable that is
// unset and has no default is an error.
func (c *Conn) Expanded() (*Conn, error) {
	cc := *c
	cc.Params = maps.Clone(c.Params)
	var missing []string
	expand := func(s string) string {
		v, m := expandEnv(s, os.LookupEnv)
		missing = append(missing, m...)
		return v
	}
	cc.Addrs = expand(c.Addrs)
	cc.Key = expand(c.Key)
	for k, v := range cc.Params {
		cc.Params[k] = expand(v)
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return nil, fmt.Errorf("connector %q: environment variable(s) %s not set", c.CName, strings.Join(slices.Compact(missing), ", "))
	}
	return &cc, nil
}

// checkEnv reports connector fields that reference unset variables: an
// error when kisflow run would open the connector (see runUsing), which
// then fails, else a warning.
func (s *Set) checkEnv(name string, c *Conn, add func(kind Kind, name, field string, sev Severity, format string, args ...any)) {
	by := s.runUsing(name)
	check := func(field, v string) {
		if _, missing := expandEnv(v, os.LookupEnv); len(missing) > 0 {
			if by != "" {
				add(KindConn, name, field, SevError, "connector %q: %s uses unset environment variable(s) %s, and flow %q uses the connector", name, field, strings.Join(missing, ", "), by)
				return
			}
			add(KindConn, name, field, SevWarning, "connector %q: %s uses unset environment variable(s) %s", name, field, strings.Join(missing, ", "))
		}
	}
	check("addrs", c.Addrs)
	check("key", c.Key)
	for _, k := range sortedKeys(c.Params) {
		check("params."+k, c.Params[k])
	}
}

// runUsing returns the name of an enabled flow with a stream block (a flow
// kisflow run runs) that opens connector cname: its stream names it, or a
// function it runs has it as option.cname; else "".
func (s *Set) runUsing(cname string) string {
	if by := s.streamUsing(cname); by != "" {
		return by
	}
	for _, name := range sortedKeys(s.Flows) {
		fl := s.Flows[name]
		if fl.Stream == nil || !fl.Enabled() {
			continue
		}
		for _, st := range fl.Flows {
			if fn := s.Funcs[st.FName]; fn != nil && fn.Option.CName == cname {
				return name
			}
		}
	}
	return ""
}
