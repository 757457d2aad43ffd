package kislog

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

type recorder struct {
	lines []string
	debug bool
}

func (r *recorder) InfoFX(_ context.Context, s string, v ...any)  { r.add("INFO(ctx)", s, v) }
func (r *recorder) ErrorFX(_ context.Context, s string, v ...any) { r.add("ERROR(ctx)", s, v) }
func (r *recorder) DebugFX(_ context.Context, s string, v ...any) { r.add("DEBUG(ctx)", s, v) }
func (r *recorder) InfoF(s string, v ...any)                      { r.add("INFO", s, v) }
func (r *recorder) ErrorF(s string, v ...any)                     { r.add("ERROR", s, v) }
func (r *recorder) DebugF(s string, v ...any)                     { r.add("DEBUG", s, v) }
func (r *recorder) SetDebugMode(on bool)                          { r.debug = on }
func (r *recorder) add(level, s string, v []any) {
	r.lines = append(r.lines, level+" "+fmt.Sprintf(s, v...))
}

func TestHandler(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	log := slog.New(NewHandler(rec)).With("flow", "F").WithGroup("g")
	log.Info("started", "rows", 3)
	log.Debug("hidden")
	log.Warn("slow", slog.Group("sink", "name", "db"))
	slog.New(NewHandler(rec).WithDebug(true)).Debug("shown", "k", "v")
	type key struct{}
	ctx := context.WithValue(context.Background(), key{}, "trace")
	log.InfoContext(ctx, "with context")
	log.ErrorContext(ctx, "failed")
	want := "INFO started flow=F g.rows=3|ERROR slow flow=F g.sink.name=db|DEBUG shown k=v|INFO(ctx) with context flow=F|ERROR(ctx) failed flow=F"
	if got := strings.Join(rec.lines, "|"); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if !rec.debug {
		t.Fatal("WithDebug did not set the logger's debug mode")
	}
}
