// Package config is the KisFlow YAML model: functions (`kistype: func`),
// flows (`kistype: flow`), connectors (`kistype: conn`) and the global
// settings (`kistype: global`).
//
// Every file the original KisFlow writes loads unchanged, including its
// `return_duration` spelling of `retry_duration` and `load: null` on
// connectors. Import reads a folder tree of .yml and .yaml files; Lint
// reports every problem as `file:line: message`; Set.ExportFlow writes a flow
// with its functions and connectors back to a folder. NewFunc, NewFlow, Step
// and NewConn build the same model in Go.
package config
