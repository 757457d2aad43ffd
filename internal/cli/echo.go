package cli

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/driver"
)

func echoCmd(reg *kisflow.Registry) *cobra.Command {
	var flows []string
	cmd := &cobra.Command{
		Use:   "echo DIR",
		Short: "Print the configuration of DIR as run resolves it, secrets masked",
		Long: "Print every document of DIR as YAML the way run resolves it: ${VAR} and\n" +
			"${VAR:-default} expanded from the environment, the defaults of each stream block\n" +
			"and of each connector's declared params (kisflow list TYPE) filled in, and every secret (passwords and tokens in addresses and DSNs, values\n" +
			"of secret-named params, the values of ${...PASSWORD}-like variables) replaced by\n" +
			"xxxxx, as in logs. Documents come in a fixed order, flows, functions, connectors\n" +
			"(each by name), then the global document, each after a comment naming the file\n" +
			"and line it was read from. With --flow, only those flows, the functions and\n" +
			"connectors they use, and the global document. Exits 0, or 2 when DIR cannot be\n" +
			"read or has a lint error.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			set, err := loadConfig(reg, args[0], cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if err := knownFlows(set, flows, args[0]); err != nil {
				return err
			}
			text, err := echoText(reg, set, flows)
			if err != nil {
				return &exitError{code: ExitUsage, err: err}
			}
			_, err = io.WriteString(cmd.OutOrStdout(), text)
			return err
		},
	}
	cmd.Flags().StringSliceVar(&flows, "flow", nil, "print only these flows and what they use (repeatable)")
	return cmd
}

// knownFlows fails with exit 2 when a name of --flow is no flow of set.
func knownFlows(set *config.Set, names []string, dir string) error {
	for _, n := range names {
		if set.Flows[n] == nil {
			return &exitError{code: ExitUsage, err: fmt.Errorf("no flow %q in %s%s", n, dir, config.SuggestName(n, set.FlowNames()))}
		}
	}
	return nil
}

// echoText is the resolved YAML of the documents of set (those the flows
// named use, when any is named), redacted as the logs are.
func echoText(reg *kisflow.Registry, set *config.Set, flows []string) (string, error) {
	r, _ := set.Resolved() // lint has warned of unset variables
	for _, c := range r.Conns {
		if spec, ok := reg.ConnectorSpec(c.Type); ok {
			c.Params = specDefaults(spec, c.Params)
		}
	}
	flowNames, funcNames, connNames := r.FlowNames(), sortedNames(r.Funcs), sortedNames(r.Conns)
	if len(flows) > 0 {
		flowNames = slices.Compact(slices.Sorted(slices.Values(flows)))
		funcNames = nil
		for _, n := range flowNames {
			for _, st := range r.Flows[n].Flows {
				if r.Funcs[st.FName] != nil && !slices.Contains(funcNames, st.FName) {
					funcNames = append(funcNames, st.FName)
				}
			}
		}
		slices.Sort(funcNames)
		connNames = sortedNames(r.ConnUses(flowNames...))
	}
	var b strings.Builder
	doc := func(kind config.Kind, name string, v any) error {
		data, err := config.Marshal(kind, v)
		if err != nil {
			return fmt.Errorf("echo %s %q: %w", kind, name, err)
		}
		b.WriteString("---\n")
		if pos := set.Pos(kind, name, ""); pos.String() != "" {
			fmt.Fprintf(&b, "# %s\n", pos)
		}
		b.Write(data)
		return nil
	}
	for _, n := range flowNames {
		fl := *r.Flows[n]
		if fl.Stream != nil {
			st := *fl.Stream
			if c := r.Conns[st.Source]; c != nil && st.BatchSize <= 0 {
				if spec, ok := reg.ConnectorSpec(c.Type); ok {
					st.BatchSize = spec.BatchSize // the source type's default (0: the runtime's)
				}
			}
			st = kisflow.StreamDefaults(st)
			fl.Stream = &st
		}
		if err := doc(config.KindFlow, n, &fl); err != nil {
			return "", err
		}
	}
	for _, n := range funcNames {
		if err := doc(config.KindFunc, n, r.Funcs[n]); err != nil {
			return "", err
		}
	}
	for _, n := range connNames {
		if err := doc(config.KindConn, n, r.Conns[n]); err != nil {
			return "", err
		}
	}
	if r.Global != nil {
		if err := doc(config.KindGlobal, "", r.Global); err != nil {
			return "", err
		}
	}
	return set.Redactor().Redact(b.String()), nil
}

func sortedNames[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

// specDefaults returns params with the default of every param spec
// declares that params leave unset (neither it nor a former name given)
// filled in, and the values of its secret params masked.
func specDefaults(spec *driver.Spec, params map[string]string) map[string]string {
	out := maps.Clone(params)
	if out == nil {
		out = map[string]string{}
	}
	for _, p := range spec.Params {
		names := append([]string{p.Name}, p.Aliases...)
		given := false
		for _, n := range names {
			if out[n] != "" {
				given = true
				if p.Secret {
					out[n] = config.Redacted
				}
			}
		}
		if !given && p.Default != "" {
			out[p.Name] = p.Default
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
