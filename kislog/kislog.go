// Package kislog adapts a KisFlow-style logger (the original project's
// KisLogger interface) to log/slog, so code that already has one can hand it
// to the engine with kisflow.WithLogger(slog.New(kislog.NewHandler(l))).
package kislog

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// Logger is the original KisFlow logger interface.
type Logger interface {
	InfoFX(ctx context.Context, str string, v ...any)
	ErrorFX(ctx context.Context, str string, v ...any)
	DebugFX(ctx context.Context, str string, v ...any)
	InfoF(str string, v ...any)
	ErrorF(str string, v ...any)
	DebugF(str string, v ...any)
	SetDebugMode(enable bool)
}

// Handler is a slog.Handler that writes each record to a Logger as one line:
// the message followed by key=value attributes. Records logged with a
// context go to the FX methods, the others to the F methods; warnings go to
// ErrorFX or ErrorF.
type Handler struct {
	l     Logger
	debug bool
	attrs string
	group string
}

// NewHandler returns a Handler over l. Debug records are passed on only
// with WithDebug(true), mirroring KisLogger's SetDebugMode.
func NewHandler(l Logger) *Handler { return &Handler{l: l} }

// WithDebug returns a copy of h that passes debug records on (or not), and
// sets the logger's debug mode to match.
func (h *Handler) WithDebug(enable bool) *Handler {
	c := *h
	c.debug = enable
	h.l.SetDebugMode(enable)
	return &c
}

// Enabled reports whether records of level are passed on.
func (h *Handler) Enabled(_ context.Context, level slog.Level) bool {
	return level >= slog.LevelInfo || h.debug
}

// Handle writes r to the Logger.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	b.WriteString(h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		writeAttr(&b, h.group, a)
		return true
	})
	line := b.String()
	// slog's methods without a context (Info, Error) hand the handler
	// context.Background(): those go to the logger's F methods, as KisFlow
	// code calling InfoF would; calls with a context of their own go to FX.
	if ctx == nil || ctx == context.Background() {
		switch {
		case r.Level >= slog.LevelWarn:
			h.l.ErrorF("%s", line)
		case r.Level >= slog.LevelInfo:
			h.l.InfoF("%s", line)
		default:
			h.l.DebugF("%s", line)
		}
		return nil
	}
	switch {
	case r.Level >= slog.LevelWarn:
		h.l.ErrorFX(ctx, "%s", line)
	case r.Level >= slog.LevelInfo:
		h.l.InfoFX(ctx, "%s", line)
	default:
		h.l.DebugFX(ctx, "%s", line)
	}
	return nil
}

// WithAttrs returns a Handler that adds attrs to every record.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	var b strings.Builder
	b.WriteString(h.attrs)
	for _, a := range attrs {
		writeAttr(&b, h.group, a)
	}
	c.attrs = b.String()
	return &c
}

// WithGroup returns a Handler that qualifies later attribute keys with name.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.group = h.group + name + "."
	return &c
}

func writeAttr(b *strings.Builder, group string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		for _, g := range a.Value.Group() {
			writeAttr(b, group+a.Key+".", g)
		}
		return
	}
	fmt.Fprintf(b, " %s%s=%v", group, a.Key, a.Value.Any())
}
