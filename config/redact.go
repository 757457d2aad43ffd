package config

import (
	"cmp"
	"context"
	"io"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Redacted is what a secret is replaced with.
const Redacted = "xxxxx"

// minSecret is the shortest known value a Redactor replaces: shorter ones
// ("1", "on") would garble every message they happen to occur in.
const minSecret = 4

var (
	// urlUserRE finds the user information of a URL (scheme://user:pass@
	// or scheme://token@) up to the last @ of its authority.
	urlUserRE = regexp.MustCompile("(?i)\\b([a-z][a-z0-9+.\\-]*)://([^\\s\"'`<>,/?#]*)@")
	// mysqlRE finds a go-sql-driver DSN's user:password@protocol(.
	mysqlRE = regexp.MustCompile("([^\\s:@/\"'`(),]+):([^\\s\"'`]*)@(?:tcp|tcp4|tcp6|udp|unix)?\\(")
	// pairRE finds key=value and key: value pairs whose key names a
	// secret: PostgreSQL keyword DSNs (password=..., where a backslash
	// escapes the next character, a space too), URL queries, slog text,
	// Go maps, JSON and HTTP headers (Authorization: Bearer ...).
	pairRE = regexp.MustCompile("(?i)\\b([a-z0-9_.\\-]*(?:password|passwd|pwd|secret|token|api[_\\-]?key|authorization|credentials))" +
		"([\"']?\\s*[=:]\\s*(?:(?:bearer|basic|token)\\s+)?)" +
		"(\"(?:\\\\.|[^\"\\\\])*\"|'(?:\\\\.|[^'\\\\])*'|(?:\\\\.|[^\\s,;&\"'{}\\[\\]()<>\\\\])+)")
)

// secretKey reports whether a parameter, field or header named k holds a
// secret: password, sasl_password, token, secret, api_key, authorization,
// credentials and the like.
func secretKey(k string) bool {
	m := pairRE.FindStringSubmatchIndex(k + "=v")
	return m != nil && m[2] == 0 && m[3] == len(k)
}

// scan calls found with each secret that the patterns recognise in s (URL
// passwords and tokens, MySQL DSN passwords, values of secret-named keys)
// and replaces it with what found returns.
func scan(s string, found func(secret string) string) string {
	s = replaceGroup(urlUserRE, s, 2, func(m []string) string {
		scheme, user := m[1], m[2]
		if name, pass, ok := strings.Cut(user, ":"); ok {
			if pass == "" {
				return user
			}
			return name + ":" + found(pass)
		}
		if tokenSchemes[strings.ToLower(scheme)] {
			return found(user) // nats://TOKEN@host
		}
		return user // postgres://postgres@host: a user name, no secret
	})
	s = replaceGroup(mysqlRE, s, 2, func(m []string) string {
		pass := m[2]
		if pass == "" || pass == Redacted {
			return pass
		}
		return found(pass)
	})
	return replaceGroup(pairRE, s, 3, func(m []string) string {
		v := m[3]
		if v == "YES" || v == "NO" {
			return v // MySQL's "Access denied ... (using password: YES)"
		}
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') {
			return v[:1] + found(v[1:len(v)-1]) + v[len(v)-1:]
		}
		return found(v)
	})
}

// tokenSchemes are the URL schemes whose user without a password is a
// token (NATS: nats://TOKEN@host).
var tokenSchemes = map[string]bool{"nats": true, "tls": true, "ws": true, "wss": true}

// replaceGroup replaces submatch g of every match of re in s with repl of
// the match's submatches (m[g] is the one replaced; "" for one that did
// not take part).
func replaceGroup(re *regexp.Regexp, s string, g int, repl func(m []string) string) string {
	ms := re.FindAllStringSubmatchIndex(s, -1)
	if ms == nil {
		return s
	}
	var b strings.Builder
	last := 0
	sub := make([]string, re.NumSubexp()+1)
	for _, m := range ms {
		lo, hi := m[2*g], m[2*g+1]
		if lo < 0 {
			continue
		}
		for i := range sub {
			sub[i] = ""
			if m[2*i] >= 0 {
				sub[i] = s[m[2*i]:m[2*i+1]]
			}
		}
		b.WriteString(s[last:lo])
		b.WriteString(repl(sub))
		last = hi
	}
	b.WriteString(s[last:])
	return b.String()
}

// Redact returns s with every secret it can recognise replaced by "xxxxx":
// the password or token of a URL in any scheme (redis://, amqp://, nats://,
// tcp://, ssl://, postgres://, http://...: scheme://user:xxxxx@host,
// scheme://xxxxx@host), the password of a MySQL DSN
// (user:xxxxx@tcp(host)/db), and the value of a key that names a secret in
// key=value or key: value form (password=xxxxx of a PostgreSQL keyword DSN,
// ?token=xxxxx, sasl_password=xxxxx in slog text, "secret":"xxxxx",
// Authorization: Bearer xxxxx). It works on any text: an address, a DSN,
// an error message, a log line.
//
// This is the redaction of every error, log line and CLI output of KisFlow.
// Secrets it cannot recognise by their form (a password given in a
// parameter and echoed bare by a server) are caught by a Redactor, which
// also knows the configured values.
func Redact(s string) string {
	return scan(s, func(string) string { return Redacted })
}

// RedactError returns err with its message redacted by Redact; errors.Is
// and errors.As see err as before. A nil err is nil.
func RedactError(err error) error { return (*Redactor)(nil).Error(err) }

// RedactURLs is Redact, under the name connectors used for their addresses.
func RedactURLs(s string) string { return Redact(s) }

// Redactor replaces the configured secrets wherever they appear, as well as
// everything Redact recognises. The nil *Redactor knows no values and only
// applies Redact. It is safe for concurrent use.
type Redactor struct {
	values []string // longest first
}

// NewRedactor returns a Redactor for the given secret values (and their
// forms escaped for a URL's query, path and user information); values shorter than 4 bytes are ignored.
func NewRedactor(values ...string) *Redactor {
	r := &Redactor{}
	for _, v := range values {
		userinfo := strings.TrimPrefix(url.UserPassword("", v).String(), ":")
		for _, f := range []string{v, url.QueryEscape(v), url.PathEscape(v), userinfo} {
			if len(f) >= minSecret && f != Redacted {
				r.values = append(r.values, f)
			}
		}
	}
	slices.SortFunc(r.values, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	r.values = slices.Compact(r.values)
	return r
}

// Redact returns s with the known values and what Redact recognises
// replaced by "xxxxx".
func (r *Redactor) Redact(s string) string {
	if r != nil {
		for _, v := range r.values {
			s = strings.ReplaceAll(s, v, Redacted)
		}
	}
	return Redact(s)
}

// Error returns err with a redacted message; errors.Is and errors.As see
// err as before. A nil err is nil.
func (r *Redactor) Error(err error) error {
	if err == nil {
		return nil
	}
	msg := r.Redact(err.Error())
	if msg == err.Error() {
		return err
	}
	return &redactedError{msg: msg, err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// Writer returns a writer that redacts each Write before passing it to w.
// A secret split across two Writes is not recognised: loggers and fmt
// write a line at a time.
func (r *Redactor) Writer(w io.Writer) io.Writer { return &redactWriter{r: r, w: w} }

type redactWriter struct {
	r *Redactor
	w io.Writer
}

func (w *redactWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(w.w, w.r.Redact(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Handler returns an slog.Handler that redacts the message and every
// attribute value (strings, errors, anything printed with fmt) of each
// record before h handles it.
func (r *Redactor) Handler(h slog.Handler) slog.Handler {
	if rh, ok := h.(*redactHandler); ok && rh.r == r {
		return h
	}
	return &redactHandler{r: r, h: h}
}

type redactHandler struct {
	r *Redactor
	h slog.Handler
}

func (h *redactHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.h.Enabled(ctx, l) }

func (h *redactHandler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, h.r.Redact(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.h.Handle(ctx, out)
}

func (h *redactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(as))
	for i, a := range as {
		red[i] = h.attr(a)
	}
	return &redactHandler{r: h.r, h: h.h.WithAttrs(red)}
}

func (h *redactHandler) WithGroup(name string) slog.Handler {
	return &redactHandler{r: h.r, h: h.h.WithGroup(name)}
}

// attr redacts an attribute's value. The key takes part, so that
// password=... is redacted whatever its value looks like.
func (h *redactHandler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindGroup:
		as := v.Group()
		red := make([]any, len(as))
		for i, g := range as {
			red[i] = h.attr(g)
		}
		return slog.Group(a.Key, red...)
	case slog.KindString, slog.KindAny:
		s := v.String()
		if secretKey(a.Key) {
			if s == "" {
				return a
			}
			return slog.String(a.Key, Redacted)
		}
		if r := h.r.Redact(s); r != s || v.Kind() == slog.KindAny {
			return slog.String(a.Key, r)
		}
	}
	return a
}

// Redactor returns a Redactor for the secrets of s: those of each
// connector (see Conn.Redactor) and the same in the plugins' configs (a
// tracing header such as Authorization, an endpoint with a password).
func (s *Set) Redactor() *Redactor {
	if s == nil {
		return NewRedactor()
	}
	var sc secretCollector
	for _, c := range s.Conns {
		sc.conn(c)
	}
	if s.Global != nil {
		for _, r := range s.Global.PluginRefs() {
			walkScalars(&s.Global.Plugin(r.Type, r.Name).node, "", sc.add)
		}
	}
	return NewRedactor(sc.values...)
}

// Redactor returns a Redactor for the secrets of c: the passwords and
// tokens in its addrs and parameters (a dsn, a url), the values of its
// secret-named parameters (password, token, sasl_password, ...), each both
// as written and with ${VAR} expanded, and the value of every ${VAR} whose
// name names a secret (${REDIS_PASSWORD}).
func (c *Conn) Redactor() *Redactor {
	var sc secretCollector
	sc.conn(c)
	return NewRedactor(sc.values...)
}

// secretCollector gathers the secret values of a configuration.
type secretCollector struct{ values []string }

func (sc *secretCollector) conn(c *Conn) {
	sc.add("addrs", c.Addrs)
	sc.add("key", c.Key)
	for k, v := range c.Params {
		sc.add(k, v)
	}
}

// add collects the secrets of the value v of key.
func (sc *secretCollector) add(key, v string) {
	for _, form := range []string{v, expandedForLog(v)} {
		if secretKey(key) {
			sc.values = append(sc.values, strings.Trim(form, "\"'"))
			if _, last, ok := strings.Cut(strings.TrimSpace(form), " "); ok {
				sc.values = append(sc.values, last) // "Bearer TOKEN": TOKEN alone too
			}
		}
		found := func(secret string) string {
			sc.values = append(sc.values, secret)
			if strings.Contains(secret, `\`) {
				// A keyword DSN's escapes (S3cr\ et): the value the
				// driver uses, and may print, is unescaped.
				sc.values = append(sc.values, unescapeDSN(secret))
			}
			return secret
		}
		scan(form, found)
		for _, part := range strings.Split(form, ",") {
			if !strings.Contains(part, "://") && strings.Contains(part, "@") {
				scan("x://"+strings.TrimSpace(part), found) // user:password@host without a scheme
			}
		}
	}
	for _, m := range envRef.FindAllStringSubmatch(v, -1) {
		if secretKey(m[1]) {
			if ev, ok := os.LookupEnv(m[1]); ok {
				sc.values = append(sc.values, ev)
			}
		}
	}
}

// expandedForLog expands ${VAR} references, leaving unset ones empty.
func expandedForLog(v string) string {
	out, _ := expandEnv(v, os.LookupEnv)
	return out
}

// walkScalars calls f with every scalar of n and the key it is the value
// of ("" in a list under no key).
func walkScalars(n *yaml.Node, key string, f func(key, v string)) {
	if n == nil {
		return
	}
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			walkScalars(c, key, f)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			walkScalars(n.Content[i+1], n.Content[i].Value, f)
		}
	case yaml.ScalarNode:
		f(key, n.Value)
	}
}

// unescapeDSN removes the backslash escapes of a PostgreSQL keyword DSN
// value.
func unescapeDSN(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+1 < len(v) {
			i++
		}
		b.WriteByte(v[i])
	}
	return b.String()
}
