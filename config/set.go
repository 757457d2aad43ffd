package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Pos is where a document or one of its fields was read.
type Pos struct {
	File string
	Line int
}

// String formats p as file:line, or "" when p is unknown.
func (p Pos) String() string {
	switch {
	case p.File == "" && p.Line == 0:
		return ""
	case p.Line == 0:
		return p.File
	}
	return p.File + ":" + strconv.Itoa(p.Line)
}

// Severity tells whether a Problem fails the lint.
type Severity int

// Problem severities.
const (
	SevError Severity = iota
	SevWarning
)

// Problem is one finding of Lint: an error or a warning at a position.
type Problem struct {
	Pos      Pos
	Severity Severity
	Msg      string
}

// String formats the problem as `file:line: message`, with `warning: ` before
// the message of a warning.
func (p Problem) String() string {
	msg := p.Msg
	if p.Severity == SevWarning {
		msg = "warning: " + msg
	}
	if s := p.Pos.String(); s != "" {
		return s + ": " + msg
	}
	return msg
}

// Error is returned by Import when the configuration has errors. It lists
// every error problem; warnings are left out.
type Error struct {
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("invalid configuration:")
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// Set is a whole configuration: functions, flows and connectors by name, and
// the global settings. The zero value is not usable; call NewSet.
type Set struct {
	Funcs  map[string]*Func
	Flows  map[string]*Flow
	Conns  map[string]*Conn
	Global *Global

	src    map[srcKey]*source
	curDir string // the folder of the file being read, for Conn.Dir
}

type srcKey struct {
	kind Kind
	name string
}

// source records where a document was read and the line of each field path
// ("fname", "option.cname", "flows[2].fname").
type source struct {
	pos   Pos
	lines map[string]int
}

// NewSet returns an empty Set.
func NewSet() *Set {
	return &Set{
		Funcs: map[string]*Func{},
		Flows: map[string]*Flow{},
		Conns: map[string]*Conn{},
		src:   map[srcKey]*source{},
	}
}

// AddFunc adds a function config; a duplicate name is an error.
func (s *Set) AddFunc(f *Func) error {
	if _, dup := s.Funcs[f.FName]; dup {
		return fmt.Errorf("duplicate function %q", f.FName)
	}
	s.Funcs[f.FName] = f
	return nil
}

// AddFlow adds a flow config; a duplicate name is an error.
func (s *Set) AddFlow(f *Flow) error {
	if _, dup := s.Flows[f.FlowName]; dup {
		return fmt.Errorf("duplicate flow %q", f.FlowName)
	}
	s.Flows[f.FlowName] = f
	return nil
}

// AddConn adds a connector config; a duplicate name is an error.
func (s *Set) AddConn(c *Conn) error {
	if _, dup := s.Conns[c.CName]; dup {
		return fmt.Errorf("duplicate connector %q", c.CName)
	}
	s.Conns[c.CName] = c
	return nil
}

// Equal reports whether s and o hold the same configuration; where each was
// read from does not matter.
func (s *Set) Equal(o *Set) bool {
	return reflect.DeepEqual(s.Funcs, o.Funcs) && reflect.DeepEqual(s.Flows, o.Flows) &&
		reflect.DeepEqual(connsWithoutDir(s.Conns), connsWithoutDir(o.Conns)) && s.Global.equal(o.Global)
}

func connsWithoutDir(m map[string]*Conn) map[string]Conn {
	out := make(map[string]Conn, len(m))
	for k, c := range m {
		cc := *c
		cc.Dir = ""
		out[k] = cc
	}
	return out
}

// Pos returns where the document of kind and name was read, with the line of
// a field path when known ("" for the document itself).
func (s *Set) Pos(kind Kind, name, field string) Pos {
	src := s.src[srcKey{kind, name}]
	if src == nil {
		return Pos{}
	}
	p := src.pos
	if field != "" {
		if l, ok := src.lines[field]; ok {
			p.Line = l
		}
	}
	return p
}

// FlowNames returns the names of all flows, sorted.
func (s *Set) FlowNames() []string {
	names := make([]string, 0, len(s.Flows))
	for n := range s.Flows {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Import reads every .yml and .yaml file below dir (nested folders too) and
// returns the configuration. When anything is wrong the error is an *Error
// listing every problem with its file and line; warnings do not fail it.
func Import(dir string, opts ...LintOption) (*Set, error) {
	if err := statDir(dir); err != nil {
		return nil, fmt.Errorf("import config: %w", err)
	}
	return importFS(os.DirFS(dir), ".", dir, opts)
}

// statDir checks that dir is a folder; a file is refused with the folder
// to give instead.
func statDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is a file: give the folder that holds it (%s), whose .yml and .yaml files are read together", dir, filepath.Dir(dir))
	}
	return nil
}

// ImportFS is Import over a file system (for example an embed.FS); file
// names in problems are paths within fsys.
func ImportFS(fsys fs.FS, dir string, opts ...LintOption) (*Set, error) {
	return importFS(fsys, dir, "", opts)
}

func importFS(fsys fs.FS, dir, display string, opts []LintOption) (*Set, error) {
	s, probs, err := load(fsys, dir, display)
	if err != nil {
		return nil, err
	}
	probs = append(probs, s.Check(opts...)...)
	sortProblems(probs)
	s.redactProblems(probs)
	var errs []Problem
	for _, p := range probs {
		if p.Severity == SevError {
			errs = append(errs, p)
		}
	}
	if len(errs) > 0 {
		return s, &Error{Problems: errs}
	}
	return s, nil
}

// Lint reads the folder as Import does and returns every problem, errors and
// warnings, in file and line order. Disabled flows are checked too. The error
// is for a folder that cannot be read at all.
func Lint(dir string, opts ...LintOption) ([]Problem, error) {
	if err := statDir(dir); err != nil {
		return nil, fmt.Errorf("lint: %w", err)
	}
	s, probs, err := load(os.DirFS(dir), ".", dir)
	if err != nil {
		return nil, err
	}
	probs = append(probs, s.Check(opts...)...)
	sortProblems(probs)
	s.redactProblems(probs)
	return probs, nil
}

// redactProblems keeps the configuration's secrets out of problems (a
// plugin's Validate error or a yaml.v3 message may quote a value).
func (s *Set) redactProblems(ps []Problem) {
	r := s.Redactor()
	for i := range ps {
		ps[i].Msg = r.Redact(ps[i].Msg)
	}
}

func sortProblems(ps []Problem) {
	slices.SortStableFunc(ps, func(a, b Problem) int {
		if c := strings.Compare(a.Pos.File, b.Pos.File); c != 0 {
			return c
		}
		return a.Pos.Line - b.Pos.Line
	})
}

// load parses every YAML file below dir of fsys into a new Set, returning the
// per-document problems (syntax, kistype, field types, duplicates, unknown
// fields). Cross-references are checked by Check.
func load(fsys fs.FS, dir, display string) (*Set, []Problem, error) {
	s := NewSet()
	var probs []Problem
	var files []string
	err := fs.WalkDir(fsys, dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if ext := path.Ext(p); ext == ".yml" || ext == ".yaml" {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read config folder: %w", err)
	}
	for _, p := range files {
		name := p
		if display != "" {
			name = filepath.Join(display, filepath.FromSlash(p))
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return nil, nil, fmt.Errorf("read %s: %w", name, err)
		}
		s.curDir = ""
		if display != "" {
			s.curDir = filepath.Dir(name)
		}
		probs = append(probs, s.parseFile(name, data)...)
	}
	return s, probs, nil
}

var lineRE = regexp.MustCompile(`line (\d+): (.*)`)

// yamlProblems turns a yaml.v3 error into problems carrying its line numbers.
func yamlProblems(file string, err error, what string) []Problem {
	var te *yaml.TypeError
	var msgs []string
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	var out []Problem
	for _, m := range msgs {
		p := Problem{Pos: Pos{File: file}, Msg: what + ": " + m}
		if sm := lineRE.FindStringSubmatch(m); sm != nil {
			p.Pos.Line, _ = strconv.Atoi(sm[1])
			p.Msg = what + ": " + sm[2]
		}
		out = append(out, p)
	}
	return out
}

func (s *Set) parseFile(file string, data []byte) []Problem {
	var probs []Problem
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return probs
		}
		if err != nil {
			ps := yamlProblems(file, err, "malformed YAML")
			if l := syntaxErrorLine(data); l > 0 && len(ps) == 1 {
				ps[0].Pos.Line = l
			}
			return append(probs, ps...)
		}
		probs = append(probs, s.parseDoc(file, &doc)...)
	}
}

// syntaxErrorLine returns the line at which data stops being valid YAML,
// or 0 when it parses. yaml.v3 names the start of the construct that is
// broken (a line early for parser errors, whose marks it counts from 0),
// never the line where it broke, and names no line for some errors.
//
// The answer is the first of a few candidate lines whose prefix fails to
// parse: the line yaml.v3 names and the one after it (an unclosed quote or
// bracket), the line the parser had read up to when it failed and the last
// line with text before it (the parser reads one line ahead to end a plain
// scalar). Parsing a fixed number of prefixes keeps the search linear in
// the size of data; trying every prefix made a 92 KB file take 42 s.
func syntaxErrorLine(data []byte) int {
	line, _ := locateSyntaxError(data)
	return line
}

// locateSyntaxError is syntaxErrorLine that also returns how many bytes the
// parses read in all, so that a test can hold the search to linear work.
func locateSyntaxError(data []byte) (line, work int) {
	r := &byteReader{data: data}
	err := decodeAll(r)
	work = r.n
	if err == nil {
		return 0, work
	}
	upto := lineOf(data, r.n)
	cands := []int{upto, lastTextLine(data, upto)}
	if sm := lineRE.FindStringSubmatch(err.Error()); sm != nil {
		l, _ := strconv.Atoi(sm[1])
		cands = append(cands, l, l+1)
	}
	slices.Sort(cands)
	cands = slices.Compact(cands)
	for _, l := range cands {
		if l < 1 || l > upto {
			continue
		}
		end := lineEnd(data, l)
		work += end
		if decodeAll(bytes.NewReader(data[:end])) != nil {
			return l, work
		}
	}
	return upto, work
}

// decodeAll decodes every document of r and returns the first error.
func decodeAll(r io.Reader) error {
	dec := yaml.NewDecoder(r)
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// byteReader hands data to the YAML parser one byte per Read, so that n
// tells how far the parser had read when it stopped: it reads only what
// its lookahead needs.
type byteReader struct {
	data []byte
	n    int
}

func (r *byteReader) Read(p []byte) (int, error) {
	if r.n >= len(r.data) {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = r.data[r.n]
	r.n++
	return 1, nil
}

// lineOf returns the 1-based line of the last of the first n bytes of data.
func lineOf(data []byte, n int) int {
	if n <= 0 {
		return 1
	}
	return bytes.Count(data[:n-1], []byte("\n")) + 1
}

// lineEnd returns the offset just past line l (1-based) of data.
func lineEnd(data []byte, l int) int {
	off := 0
	for range l {
		i := bytes.IndexByte(data[off:], '\n')
		if i < 0 {
			return len(data)
		}
		off += i + 1
	}
	return off
}

// lastTextLine returns the last line before line l that holds more than
// blanks, or 0.
func lastTextLine(data []byte, l int) int {
	lines := bytes.SplitAfter(data[:lineEnd(data, l-1)], []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		if len(bytes.TrimSpace(lines[i])) > 0 {
			return i + 1
		}
	}
	return 0
}

func (s *Set) parseDoc(file string, doc *yaml.Node) []Problem {
	root := doc
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = root.Content[0]
	}
	at := func(line int) Pos { return Pos{File: file, Line: line} }
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil // an empty document
	}
	if root.Kind != yaml.MappingNode {
		return []Problem{{Pos: at(root.Line), Msg: "document is not a mapping of fields"}}
	}
	var kindNode *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "kistype" {
			kindNode = root.Content[i+1]
		}
	}
	if kindNode == nil {
		return []Problem{{Pos: at(root.Line), Msg: "missing kistype (want func, flow, conn, global or test)"}}
	}
	kind := Kind(kindNode.Value)
	if kind == KindTest {
		return nil // read by `kisflow test`, not part of the configuration
	}
	if !kind.valid() {
		return []Problem{{Pos: at(kindNode.Line), Msg: fmt.Sprintf("unknown kistype %q (want func, flow, conn, global or test)%s", kindNode.Value, SuggestName(strings.ToLower(kindNode.Value), []string{"func", "flow", "conn", "global", "test"}))}}
	}

	src := &source{pos: at(root.Line), lines: map[string]int{}}
	var probs []Problem
	var target any
	switch kind {
	case KindFunc:
		target = &Func{}
	case KindFlow:
		target = &Flow{}
	case KindConn:
		target = &Conn{}
	case KindGlobal:
		target = &Global{}
	}
	walkFields(reflect.TypeOf(target).Elem(), root, "", src.lines, func(line int, sev Severity, msg string) {
		probs = append(probs, Problem{Pos: at(line), Severity: sev, Msg: msg})
	})
	if err := root.Decode(target); err != nil {
		return append(probs, yamlProblems(file, err, "bad "+kind.noun())...)
	}

	var name string
	switch v := target.(type) {
	case *Func:
		normFunc(v)
		name = v.FName
		if name == "" {
			return append(probs, Problem{Pos: src.pos, Msg: "function without fname"})
		}
		if old, dup := s.Funcs[name]; dup && old != nil {
			return append(probs, s.dupProblem(kind, name, src))
		}
		s.Funcs[name] = v
	case *Flow:
		normFlow(v)
		name = v.FlowName
		if name == "" {
			return append(probs, Problem{Pos: src.pos, Msg: "flow without flow_name"})
		}
		if old, dup := s.Flows[name]; dup {
			// The original skips disabled flows as it reads them: a disabled
			// flow named as another is a warning, and the enabled one is
			// kept, whichever file comes first.
			switch {
			case old.Enabled() && v.Enabled():
				return append(probs, s.dupProblem(kind, name, src))
			case !v.Enabled():
				p := s.dupProblem(kind, name, src)
				return append(probs, Problem{Pos: p.Pos, Severity: SevWarning, Msg: p.Msg + "; this one is disabled (status: 0) and ignored, as the original ignores it"})
			default:
				first := s.Pos(kind, name, "")
				if l := s.Pos(kind, name, "flow_name"); l.Line != 0 {
					first = l
				}
				probs = append(probs, Problem{Pos: first, Severity: SevWarning, Msg: fmt.Sprintf("duplicate flow %q (also defined at %s); this one is disabled (status: 0) and ignored, as the original ignores it", name, src.pos)})
			}
		}
		s.Flows[name] = v
	case *Conn:
		normConn(v)
		v.Dir = s.curDir
		name = v.CName
		if name == "" {
			return append(probs, Problem{Pos: src.pos, Msg: "connector without cname"})
		}
		if _, dup := s.Conns[name]; dup {
			return append(probs, s.dupProblem(kind, name, src))
		}
		s.Conns[name] = v
	case *Global:
		if s.Global != nil {
			return append(probs, s.dupProblem(kind, "", src))
		}
		for _, r := range v.PluginRefs() {
			v.Plugins[r.Type][r.Name].Pos.File = file
		}
		s.Global = v
	}
	s.src[srcKey{kind, name}] = src
	return probs
}

func (s *Set) dupProblem(kind Kind, name string, src *source) Problem {
	first := s.Pos(kind, name, "")
	what := fmt.Sprintf("duplicate %s %q", kind.noun(), name)
	if kind == KindGlobal {
		what = "duplicate global config"
	}
	line := src.pos.Line
	if l, ok := src.lines[nameField(kind)]; ok {
		line = l
	}
	return Problem{Pos: Pos{File: src.pos.File, Line: line}, Msg: fmt.Sprintf("%s (also defined at %s)", what, first)}
}

func nameField(k Kind) string {
	switch k {
	case KindFunc:
		return "fname"
	case KindFlow:
		return "flow_name"
	case KindConn:
		return "cname"
	}
	return "kistype"
}

// walkFields records the line of every field path in lines and reports keys
// that t does not have, naming a known key one or two typos away: a warning,
// except inside a flow's stream block and a function's window block, where
// a misspelt key (delivry, latenes) would silently change what the job
// guarantees or computes, so it is an error.
// PluginConfig.Decode makes every unknown key of a plugin's config an error.
func walkFields(t reflect.Type, n *yaml.Node, prefix string, lines map[string]int, warn func(int, Severity, string)) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch n.Kind {
	case yaml.MappingNode:
		if t.Kind() != reflect.Struct {
			for i := 0; i+1 < len(n.Content); i += 2 {
				p := prefix + "." + n.Content[i].Value
				lines[p] = n.Content[i].Line
				markLiteral(lines, p, n.Content[i+1])
			}
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			p := key.Value
			if prefix != "" {
				p = prefix + "." + key.Value
			}
			lines[p] = key.Line
			markLiteral(lines, p, val)
			if prefix == "" && key.Value == "kistype" {
				continue
			}
			f, ok := fieldByTag(t, key.Value)
			if !ok {
				if t == reflect.TypeOf(FuncOption{}) && key.Value == "return_duration" {
					lines[prefix+".retry_duration"] = key.Line
					continue
				}
				sev := SevWarning
				if t == reflect.TypeOf(Stream{}) || t == reflect.TypeOf(Window{}) {
					sev = SevError
				}
				warn(key.Line, sev, fmt.Sprintf("unknown field %q%s", p, suggestField(t, key.Value)))
				continue
			}
			walkFields(f.Type, val, p, lines, warn)
		}
	case yaml.SequenceNode:
		if t.Kind() != reflect.Slice {
			return
		}
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", prefix, i)
			lines[p] = item.Line
			walkFields(t.Elem(), item, p, lines, warn)
		}
	}
}

// literalSuffix marks, in a source's lines, the line of the indicator of
// a field written as a literal block scalar (`filter: |`): line k of its
// text is on that line + k.
const literalSuffix = "|"

// markLiteral records the line of val's indicator when val is a literal
// block scalar, the one style that keeps the lines of an expression.
func markLiteral(lines map[string]int, path string, val *yaml.Node) {
	if val.Kind == yaml.ScalarNode && val.Style&yaml.LiteralStyle != 0 {
		lines[path+literalSuffix] = val.Line
	}
}

// suggestField names the field of t whose key is at most two edits from key.
func suggestField(t reflect.Type, key string) string {
	best, bestD := "", 3
	for i := range t.NumField() {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		if d := editDistance(key, tag); d < bestD {
			best, bestD = tag, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func fieldByTag(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if tag == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// The norm functions map empty lists and maps to nil, so that a document
// written with `load: []` equals one written with `load: null`.
func normFunc(f *Func) {
	if len(f.Source.Must) == 0 {
		f.Source.Must = nil
	}
	if len(f.Option.DefaultParams) == 0 {
		f.Option.DefaultParams = nil
	}
}

func normFlow(f *Flow) {
	if len(f.Flows) == 0 {
		f.Flows = nil
	}
	for i := range f.Flows {
		if len(f.Flows[i].Params) == 0 {
			f.Flows[i].Params = nil
		}
	}
}

func normConn(c *Conn) {
	if len(c.Params) == 0 {
		c.Params = nil
	}
	if len(c.Load) == 0 {
		c.Load = nil
	}
	if len(c.Save) == 0 {
		c.Save = nil
	}
}
