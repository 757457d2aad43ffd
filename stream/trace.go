package stream

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// traceProp is the W3C Trace Context format (traceparent, tracestate)
// that sources read and sinks write.
var traceProp = propagation.TraceContext{}

// headerCarrier reads message headers without regard to case, since HTTP
// canonicalises "traceparent" to "Traceparent".
type headerCarrier map[string]string

func (h headerCarrier) Get(key string) string {
	if v, ok := h[key]; ok {
		return v
	}
	for k, v := range h {
		if strings.EqualFold(k, key) {
			return v
		}
	}
	return ""
}

func (h headerCarrier) Set(key, value string) { h[key] = value }

func (h headerCarrier) Keys() []string {
	out := make([]string, 0, len(h))
	for k := range h {
		out = append(out, k)
	}
	return out
}

// ExtractTrace returns ctx with the remote span context carried by
// headers, if they carry one.
func ExtractTrace(ctx context.Context, headers map[string]string) context.Context {
	if len(headers) == 0 {
		return ctx
	}
	return traceProp.Extract(ctx, headerCarrier(headers))
}

// InjectTrace writes the span context of ctx, if it has a valid one, as
// headers through set. Sinks that carry headers call it for each message.
func InjectTrace(ctx context.Context, set func(key, value string)) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	h := headerCarrier{}
	traceProp.Inject(ctx, h)
	for k, v := range h {
		set(k, v)
	}
}

// Lagger is a source that can tell how many of its messages the consumer
// has not acknowledged yet: those not delivered plus those delivered and
// not acknowledged (a consumer group's lag against its committed
// position). The metrics call it at scrape time, with a short deadline; an
// error leaves the gauge out of that scrape.
type Lagger interface {
	Lag(ctx context.Context) (int64, error)
}
