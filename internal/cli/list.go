package cli

import (
	"fmt"
	"io"
	"slices"

	"github.com/spf13/cobra"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
)

func listCmd(reg *kisflow.Registry) *cobra.Command {
	return &cobra.Command{
		Use:   "list [connectors|filters|plugins|TYPE|FILTER]",
		Short: "List the connector types, filters and plugin types of this binary, or describe one",
		Long: "Without an argument, list every connector type and filter (with what it\n" +
			"does) and plugin type this binary has. With connectors, filters or plugins,\n" +
			"list only those. With a connector type or a filter, print its params: kind,\n" +
			"default and what each does (the same declaration lint checks configs against).",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			w := cmd.OutOrStdout()
			what := ""
			if len(args) == 1 {
				what = args[0]
			}
			switch what {
			case "":
				listConnectors(w, reg)
				fmt.Fprintln(w)
				listFilters(w, reg)
				fmt.Fprintln(w)
				listPlugins(w, reg)
			case "connectors":
				listConnectors(w, reg)
			case "filters":
				listFilters(w, reg)
			case "plugins":
				listPlugins(w, reg)
			default:
				if describe(w, reg, what) {
					return nil
				}
				known := append(append(reg.DriverTypes(), reg.Filters()...), reg.PluginTypes()...)
				return &exitError{code: ExitUsage, err: fmt.Errorf("list: %q is no connector type, filter or plugin type of this binary%s", what, config.SuggestName(what, append(known, "connectors", "filters", "plugins")))}
			}
			return nil
		},
	}
}

func listConnectors(w io.Writer, reg *kisflow.Registry) {
	listSummaries(w, "connectors (kisflow list TYPE for its params):", reg.DriverTypes(), func(t string) (string, bool) {
		spec, ok := reg.ConnectorSpec(t)
		if !ok {
			return "", false
		}
		return spec.Summary, true
	})
}

// listSummaries prints a title and each name with its summary, "(no
// spec)" for a name registered without one.
func listSummaries(w io.Writer, title string, names []string, summary func(string) (string, bool)) {
	fmt.Fprintln(w, title)
	for _, n := range names {
		s, ok := summary(n)
		if !ok {
			s = "(no spec)"
		}
		fmt.Fprintf(w, "  %-10s %s\n", n, s)
	}
}

// describe prints what name is: a connector type's or a filter's params
// (a name may be both, and a plugin type too, such as metrics). It reports
// whether name is any of them.
func describe(w io.Writer, reg *kisflow.Registry, name string) bool {
	var said []string
	if spec, ok := reg.ConnectorSpec(name); ok {
		spec.Describe(w)
		said = append(said, "connector type")
	} else if slices.Contains(reg.DriverTypes(), name) {
		fmt.Fprintf(w, "%s: a connector type registered without a spec; its params are not declared\n", name)
		said = append(said, "connector type")
	}
	if spec, ok := reg.FilterSpec(name); ok {
		if len(said) > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprint(w, "filter ")
		spec.Describe(w)
		if len(spec.Params) > 0 {
			fmt.Fprintf(w, "  a function's param %s_NAME sets param NAME when the entry does not\n", name)
		}
		said = append(said, "filter")
	} else if slices.Contains(reg.Filters(), name) {
		fmt.Fprintf(w, "filter %s: registered without a spec; its params are not declared\n", name)
		said = append(said, "filter")
	}
	if slices.Contains(reg.PluginTypes(), name) {
		if len(said) > 0 {
			fmt.Fprintln(w)
		}
		if spec, ok := reg.PluginSpec(name); ok && spec.Summary != "" {
			spec.Describe(w)
		} else {
			fmt.Fprintf(w, "plugin type %s: registered without a summary; see its documentation for its config\n", name)
		}
		said = append(said, "plugin type")
	}
	return len(said) > 0
}

func listFilters(w io.Writer, reg *kisflow.Registry) {
	listSummaries(w, "filters (kisflow list NAME for its params):", reg.Filters(), func(n string) (string, bool) {
		spec, ok := reg.FilterSpec(n)
		if !ok {
			return "", false
		}
		return spec.Summary, true
	})
}

func listPlugins(w io.Writer, reg *kisflow.Registry) {
	listSummaries(w, "plugins (configured under plugins.TYPE.NAME in the global file; kisflow list TYPE for its config):", reg.PluginTypes(),
		func(n string) (string, bool) {
			spec, ok := reg.PluginSpec(n)
			return spec.Summary, ok && spec.Summary != ""
		})
}
