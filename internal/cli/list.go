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
		Use:   "list [connectors|filters|plugins|TYPE]",
		Short: "List the connector types, filters and plugin types of this binary, or describe one",
		Long: "Without an argument, list every connector type (with what it connects to),\n" +
			"filter and plugin type this binary has. With connectors, filters or plugins,\n" +
			"list only those. With a connector type, print its params: kind, default and\n" +
			"what each does (the same declaration lint checks configs against).",
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
				listNames(w, "filters", reg.Filters())
				fmt.Fprintln(w)
				listNames(w, "plugins", reg.PluginTypes())
			case "connectors":
				listConnectors(w, reg)
			case "filters":
				listNames(w, "filters", reg.Filters())
			case "plugins":
				listNames(w, "plugins", reg.PluginTypes())
			default:
				if spec, ok := reg.ConnectorSpec(what); ok {
					spec.Describe(w)
					return nil
				}
				if slices.Contains(reg.DriverTypes(), what) {
					fmt.Fprintf(w, "%s: registered without a spec; its params are not declared\n", what)
					return nil
				}
				known := append(append(reg.DriverTypes(), reg.Filters()...), reg.PluginTypes()...)
				if slices.Contains(known, what) {
					fmt.Fprintf(w, "%s: a filter or plugin type; see the README for its params\n", what)
					return nil
				}
				return &exitError{code: ExitUsage, err: fmt.Errorf("list: %q is no connector type, filter or plugin type of this binary%s", what, config.SuggestName(what, append(known, "connectors", "filters", "plugins")))}
			}
			return nil
		},
	}
}

func listConnectors(w io.Writer, reg *kisflow.Registry) {
	fmt.Fprintln(w, "connectors (kisflow list TYPE for its params):")
	for _, t := range reg.DriverTypes() {
		summary := "(no spec)"
		if spec, ok := reg.ConnectorSpec(t); ok {
			summary = spec.Summary
		}
		fmt.Fprintf(w, "  %-10s %s\n", t, summary)
	}
}

func listNames(w io.Writer, title string, names []string) {
	fmt.Fprintf(w, "%s:\n", title)
	for _, n := range names {
		fmt.Fprintf(w, "  %s\n", n)
	}
}
