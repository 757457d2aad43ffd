package config

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ExportFlow writes the flow called name, every function it names and every
// connector those functions use into dir, one file per document
// (flow-NAME.yaml, func-NAME.yaml, conn-NAME.yaml). Importing dir again gives
// an equal configuration of that flow.
func (s *Set) ExportFlow(name, dir string) error {
	fl := s.Flows[name]
	if fl == nil {
		return fmt.Errorf("export: no flow %q", name)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if err := writeDoc(dir, "flow-"+name, KindFlow, fl); err != nil {
		return err
	}
	conns := map[string]bool{}
	for _, st := range fl.Flows {
		fn := s.Funcs[st.FName]
		if fn == nil {
			return fmt.Errorf("export flow %q: unknown function %q", name, st.FName)
		}
		if err := writeDoc(dir, "func-"+fn.FName, KindFunc, fn); err != nil {
			return err
		}
		if c := fn.Option.CName; c != "" && !conns[c] {
			conn := s.Conns[c]
			if conn == nil {
				return fmt.Errorf("export flow %q: function %q uses unknown connector %q", name, fn.FName, c)
			}
			conns[c] = true
			if err := writeDoc(dir, "conn-"+c, KindConn, conn); err != nil {
				return err
			}
		}
	}
	return nil
}

// Export writes every document of the set into dir, as ExportFlow does.
func (s *Set) Export(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	for _, n := range sortedKeys(s.Flows) {
		if err := writeDoc(dir, "flow-"+n, KindFlow, s.Flows[n]); err != nil {
			return err
		}
	}
	for _, n := range sortedKeys(s.Funcs) {
		if err := writeDoc(dir, "func-"+n, KindFunc, s.Funcs[n]); err != nil {
			return err
		}
	}
	for _, n := range sortedKeys(s.Conns) {
		if err := writeDoc(dir, "conn-"+n, KindConn, s.Conns[n]); err != nil {
			return err
		}
	}
	if s.Global != nil {
		return writeDoc(dir, "global", KindGlobal, s.Global)
	}
	return nil
}

// Marshal encodes one document with its kistype first.
func Marshal(kind Kind, doc any) ([]byte, error) {
	var n yaml.Node
	if err := n.Encode(doc); err != nil {
		return nil, err
	}
	kt := []*yaml.Node{
		{Kind: yaml.ScalarNode, Tag: "!!str", Value: "kistype"},
		{Kind: yaml.ScalarNode, Tag: "!!str", Value: string(kind)},
	}
	n.Content = append(kt, n.Content...)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeDoc(dir, base string, kind Kind, doc any) error {
	data, err := Marshal(kind, doc)
	if err != nil {
		return fmt.Errorf("export %s: %w", base, err)
	}
	p := filepath.Join(dir, fileName(base)+".yaml")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return nil
}

// fileName keeps letters, digits, '-', '_' and '.', replacing the rest.
func fileName(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, s)
}
