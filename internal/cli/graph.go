package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
)

func graphCmd(reg *kisflow.Registry) *cobra.Command {
	var format string
	var flows []string
	cmd := &cobra.Command{
		Use:   "graph DIR",
		Short: "Draw the flows of DIR as Mermaid, DOT or SVG",
		Long: "Draw each flow of DIR: its source, its functions in order (name and mode),\n" +
			"the connectors its Save and Load functions use, and its sink. Mermaid and DOT\n" +
			"are text; SVG needs Graphviz's dot on the PATH.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			set, err := config.Import(args[0], reg.LintOptions()...)
			if err != nil {
				return &exitError{code: ExitUsage, err: err}
			}
			names := flows
			if len(names) == 0 {
				names = set.FlowNames()
			}
			for _, n := range names {
				if set.Flows[n] == nil {
					return &exitError{code: ExitUsage, err: fmt.Errorf("no flow %q in %s", n, args[0])}
				}
			}
			switch format {
			case "mermaid":
				_, err = io.WriteString(cmd.OutOrStdout(), Mermaid(set, names))
			case "dot":
				_, err = io.WriteString(cmd.OutOrStdout(), DOT(set, names))
			case "svg":
				dot, lerr := exec.LookPath("dot")
				if lerr != nil {
					return &exitError{code: ExitUsage, err: errors.New("--format svg needs Graphviz (dot not found on the PATH); use --format dot or mermaid")}
				}
				c := exec.Command(dot, "-Tsvg")
				c.Stdin = strings.NewReader(DOT(set, names))
				var stderr bytes.Buffer
				c.Stdout, c.Stderr = cmd.OutOrStdout(), &stderr
				if err := c.Run(); err != nil {
					return &exitError{code: ExitProblem, err: fmt.Errorf("dot: %v: %s", err, stderr.String())}
				}
			default:
				return &exitError{code: ExitUsage, err: fmt.Errorf("unknown --format %q (want mermaid, dot or svg)", format)}
			}
			return err
		},
	}
	cmd.Flags().StringVar(&format, "format", "mermaid", "mermaid, dot or svg")
	cmd.Flags().StringSliceVar(&flows, "flow", nil, "draw only these flows (repeatable)")
	return cmd
}

// graphNode is one box of a flow's drawing.
type graphNode struct {
	id, label string
	store     bool // a connector: drawn as a cylinder
}

type graphEdge struct {
	from, to string
	side     bool // a Save or Load call: drawn dotted
	label    string
}

// flowGraph lays out one flow: source -> functions -> sink, with the
// connectors of Save and Load functions beside them.
func flowGraph(set *config.Set, name string, prefix string) (nodes []graphNode, edges []graphEdge) {
	fl := set.Flows[name]
	prev := ""
	if st := fl.Stream; st != nil && st.Source != "" {
		prev = prefix + "src"
		nodes = append(nodes, graphNode{prev, "source: " + st.Source + connType(set, st.Source), true})
	}
	for i, step := range fl.Flows {
		id := fmt.Sprintf("%sf%d", prefix, i+1)
		label := step.FName
		if fc := set.Funcs[step.FName]; fc != nil {
			label += "\n" + string(fc.FMode)
			if w := fc.Window; w != nil {
				label += "\n" + windowLabel(w)
			}
			if c := fc.Option.CName; c != "" {
				cid := prefix + "c_" + sanitize(c)
				if !slices.ContainsFunc(nodes, func(n graphNode) bool { return n.id == cid }) {
					// Declared once however many steps use it.
					nodes = append(nodes, graphNode{cid, c + connType(set, c), true})
				}
				if cc := set.Conns[c]; cc != nil && cc.Type == "remote" {
					// A remote step: its body runs in the providers of
					// the connector's service.
					svc := cc.Params["service"]
					if svc == "" {
						svc = cc.Addrs
					}
					label += "\nremote: " + svc
					edges = append(edges, graphEdge{id, cid, true, "remote call"})
				} else if fc.FMode == config.Load {
					edges = append(edges, graphEdge{cid, id, true, "load"})
				} else {
					edges = append(edges, graphEdge{id, cid, true, strings.ToLower(string(fc.FMode))})
				}
			}
		}
		nodes = append(nodes, graphNode{id: id, label: label})
		if prev != "" {
			edges = append(edges, graphEdge{from: prev, to: id})
		}
		prev = id
	}
	if st := fl.Stream; st != nil && st.Sink != "" {
		id := prefix + "sink"
		nodes = append(nodes, graphNode{id, "sink: " + st.Sink + connType(set, st.Sink), true})
		if prev != "" {
			edges = append(edges, graphEdge{from: prev, to: id, label: st.Delivery})
		}
	}
	return nodes, edges
}

// windowLabel describes a window block in a few words: "tumbling 1m by
// user_id", "sliding 1h every 10s", "session gap 5m".
func windowLabel(w *config.Window) string {
	l := "window: " + w.Type
	switch w.Type {
	case "session":
		l += " gap " + w.Gap
	case "sliding":
		l += " " + w.Size + " every " + w.Slide
	default:
		l += " " + w.Size
	}
	if len(w.GroupBy) > 0 {
		l += " by " + strings.Join(w.GroupBy, ", ")
	}
	return l
}

func connType(set *config.Set, cname string) string {
	if c := set.Conns[cname]; c != nil {
		return " (" + c.Type + ")"
	}
	return ""
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, s)
}

func flowTitle(fl *config.Flow) string {
	if !fl.Enabled() {
		return fl.FlowName + " (disabled)"
	}
	return fl.FlowName
}

// Mermaid draws the named flows as a Mermaid flowchart.
func Mermaid(set *config.Set, names []string) string {
	var b strings.Builder
	b.WriteString("flowchart LR\n")
	for i, name := range names {
		prefix := fmt.Sprintf("g%d_", i+1)
		fmt.Fprintf(&b, "  subgraph %s[%q]\n", strings.TrimSuffix(prefix, "_"), flowTitle(set.Flows[name]))
		nodes, edges := flowGraph(set, name, prefix)
		for _, n := range nodes {
			label := strings.ReplaceAll(n.label, "\n", "<br/>")
			if n.store {
				fmt.Fprintf(&b, "    %s[(%q)]\n", n.id, label)
			} else {
				fmt.Fprintf(&b, "    %s[%q]\n", n.id, label)
			}
		}
		for _, e := range edges {
			arrow := "-->"
			if e.side {
				arrow = "-.->"
			}
			if e.label != "" {
				fmt.Fprintf(&b, "    %s %s|%s| %s\n", e.from, arrow, e.label, e.to)
			} else {
				fmt.Fprintf(&b, "    %s %s %s\n", e.from, arrow, e.to)
			}
		}
		b.WriteString("  end\n")
	}
	return b.String()
}

// DOT draws the named flows as a Graphviz digraph.
func DOT(set *config.Set, names []string) string {
	var b strings.Builder
	b.WriteString("digraph kisflow {\n  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];\n")
	for i, name := range names {
		prefix := fmt.Sprintf("g%d_", i+1)
		fmt.Fprintf(&b, "  subgraph cluster_%d {\n    label=%q;\n", i+1, flowTitle(set.Flows[name]))
		nodes, edges := flowGraph(set, name, prefix)
		for _, n := range nodes {
			shape := ""
			if n.store {
				shape = ", shape=cylinder"
			}
			fmt.Fprintf(&b, "    %s [label=%q%s];\n", n.id, n.label, shape)
		}
		for _, e := range edges {
			var attrs []string
			if e.side {
				attrs = append(attrs, "style=dashed")
			}
			if e.label != "" {
				attrs = append(attrs, fmt.Sprintf("label=%q", e.label))
			}
			if len(attrs) > 0 {
				fmt.Fprintf(&b, "    %s -> %s [%s];\n", e.from, e.to, strings.Join(attrs, ", "))
			} else {
				fmt.Fprintf(&b, "    %s -> %s;\n", e.from, e.to)
			}
		}
		b.WriteString("  }\n")
	}
	b.WriteString("}\n")
	return b.String()
}
