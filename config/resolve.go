package config

import (
	"maps"
	"os"
	"slices"
)

// Resolved returns a copy of s as the engine sees it: ${VAR} and
// ${VAR:-default} in the connectors' addrs, key and params and in the
// plugins' configs replaced from the environment. A variable that is unset
// and has no default becomes "" and is named in missing (sorted, once
// each). The copy holds the values, secrets too: redact what is shown of
// it with s.Redactor().
func (s *Set) Resolved() (r *Set, missing []string) {
	r = NewSet()
	r.src = s.src
	maps.Copy(r.Funcs, s.Funcs)
	maps.Copy(r.Flows, s.Flows)
	expand := func(v string) string {
		out, m := expandEnv(v, os.LookupEnv)
		missing = append(missing, m...)
		return out
	}
	for n, c := range s.Conns {
		cc := *c
		cc.Addrs, cc.Key = expand(c.Addrs), expand(c.Key)
		cc.Params = maps.Clone(c.Params)
		for k, v := range cc.Params {
			cc.Params[k] = expand(v)
		}
		r.Conns[n] = &cc
	}
	if s.Global != nil {
		g := *s.Global
		g.Plugins = make(map[string]map[string]*PluginConfig, len(s.Global.Plugins))
		for typ, byName := range s.Global.Plugins {
			g.Plugins[typ] = make(map[string]*PluginConfig, len(byName))
			for name, p := range byName {
				if p == nil {
					g.Plugins[typ][name] = nil
					continue
				}
				pc := *p
				pc.node = *expandNode(&p.node, func(int, string) {})
				walkScalars(&p.node, "", func(_, v string) { expand(v) })
				g.Plugins[typ][name] = &pc
			}
		}
		r.Global = &g
	}
	slices.Sort(missing)
	return r, slices.Compact(missing)
}

// ConnUse is how the flows of a configuration use a connector.
type ConnUse struct {
	Source bool // the source of a flow's stream
	Sink   bool // a stream's sink or dead_letter, or the connector of a Save function
	Load   bool // the connector of a Load function
}

// ConnUses returns how the named flows (every flow when none is named) use
// the connectors they reference, by connector name. Names of flows or
// connectors the set does not hold are left out.
func (s *Set) ConnUses(flows ...string) map[string]ConnUse {
	if len(flows) == 0 {
		flows = s.FlowNames()
	}
	uses := map[string]ConnUse{}
	mark := func(cname string, f func(*ConnUse)) {
		if cname == "" || s.Conns[cname] == nil {
			return
		}
		u := uses[cname]
		f(&u)
		uses[cname] = u
	}
	for _, n := range flows {
		fl := s.Flows[n]
		if fl == nil {
			continue
		}
		if st := fl.Stream; st != nil {
			mark(st.Source, func(u *ConnUse) { u.Source = true })
			mark(st.Sink, func(u *ConnUse) { u.Sink = true })
			mark(st.DeadLetter, func(u *ConnUse) { u.Sink = true })
		}
		for _, step := range fl.Flows {
			fn := s.Funcs[step.FName]
			if fn == nil {
				continue
			}
			switch fn.FMode {
			case Save:
				mark(fn.Option.CName, func(u *ConnUse) { u.Sink = true })
			case Load:
				mark(fn.Option.CName, func(u *ConnUse) { u.Load = true })
			default:
				mark(fn.Option.CName, func(*ConnUse) {})
			}
		}
	}
	return uses
}
