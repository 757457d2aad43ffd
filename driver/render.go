package driver

import (
	"fmt"
	"io"
	"strings"
)

// Describe writes the spec as text for a terminal (`kisflow list TYPE`):
// the summary, what addrs and key mean, and each param with its kind,
// default and doc.
func (s *Spec) Describe(w io.Writer) {
	fmt.Fprintf(w, "%s: %s\n", s.Type, s.Summary)
	if s.Addrs != "" {
		fmt.Fprintf(w, "  addrs: %s\n", s.Addrs)
	}
	if s.Key != "" {
		fmt.Fprintf(w, "  key: %s\n", s.Key)
	}
	if s.BatchSize > 0 {
		fmt.Fprintf(w, "  as a stream source: batch_size %d unless the flow sets it\n", s.BatchSize)
	}
	if len(s.Params) == 0 {
		fmt.Fprintln(w, "  no params")
		return
	}
	fmt.Fprintln(w, "  params:")
	for _, p := range s.Params {
		fmt.Fprintf(w, "    %s (%s)%s\n        %s\n", p.Name, p.kindText(), p.extras(), p.Doc)
	}
}

// Markdown writes the spec's params as a Markdown table (the README's
// parameter tables are made with it).
func (s *Spec) Markdown(w io.Writer) {
	fmt.Fprintf(w, "#### `%s`\n\n%s.", s.Type, strings.TrimSuffix(s.Summary, "."))
	if s.Addrs != "" {
		fmt.Fprintf(w, " `addrs`: %s.", strings.TrimSuffix(s.Addrs, "."))
	}
	if s.Key != "" {
		fmt.Fprintf(w, " `key`: %s.", strings.TrimSuffix(s.Key, "."))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w)
	if len(s.Params) == 0 {
		fmt.Fprintln(w, "No params.")
		return
	}
	fmt.Fprintln(w, "| param | kind | default | what it does |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, p := range s.Params {
		def := "`" + p.Default + "`"
		switch {
		case p.Required:
			def = "required"
		case p.Default == "":
			def = ""
		}
		doc := p.Doc
		if len(p.Aliases) > 0 {
			doc += " (formerly " + strings.Join(p.Aliases, ", ") + ")"
		}
		if p.Bare != "" {
			doc += " (a bare number is read as " + p.Bare + ", with a lint warning)"
		}
		if p.Example != "" {
			doc += "; e.g. `" + p.Example + "`"
		}
		fmt.Fprintf(w, "| `%s` | %s | %s | %s |\n", p.Name, strings.ReplaceAll(p.kindText(), "|", `\|`), def, strings.ReplaceAll(doc, "|", `\|`))
	}
}

func (p *Param) kindText() string {
	switch {
	case p.Kind == KindEnum:
		return strings.Join(p.Enum, " | ")
	case p.Min != "":
		return fmt.Sprintf("%s ≥ %s", p.Kind, p.Min)
	}
	return string(p.Kind)
}

func (p *Param) extras() string {
	var ex []string
	switch {
	case p.Required:
		ex = append(ex, "required")
	case p.Default != "":
		ex = append(ex, "default "+p.Default)
	}
	if p.Secret {
		ex = append(ex, "secret")
	}
	if len(p.Aliases) > 0 {
		ex = append(ex, "formerly "+strings.Join(p.Aliases, ", "))
	}
	if p.Bare != "" {
		ex = append(ex, "a bare number is read as "+p.Bare+", with a warning")
	}
	if p.Example != "" {
		ex = append(ex, "e.g. "+p.Example)
	}
	if len(ex) == 0 {
		return ""
	}
	return " [" + strings.Join(ex, "; ") + "]"
}
