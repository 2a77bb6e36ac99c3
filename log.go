package channels

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/microchannels/channels/broker"
)

// redactHandler hides credentials (broker.Redact) in the message and the
// string, error and Stringer attributes of every record, so that no log
// line of the plugin or its adapters shows a password, whatever error text
// (a driver's, a handler's) it carries.
type redactHandler struct{ h slog.Handler }

func redactLogger(l *slog.Logger) *slog.Logger {
	if _, ok := l.Handler().(redactHandler); ok || l.Handler() == slog.DiscardHandler {
		return l
	}
	return slog.New(redactHandler{l.Handler()})
}

func (r redactHandler) Enabled(ctx context.Context, l slog.Level) bool { return r.h.Enabled(ctx, l) }

func (r redactHandler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, broker.Redact(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(a))
		return true
	})
	return r.h.Handle(ctx, out)
}

func (r redactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(as))
	for i, a := range as {
		red[i] = redactAttr(a)
	}
	return redactHandler{r.h.WithAttrs(red)}
}

func (r redactHandler) WithGroup(name string) slog.Handler { return redactHandler{r.h.WithGroup(name)} }

func redactAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, broker.Redact(v.String()))
	case slog.KindGroup:
		g := v.Group()
		red := make([]any, len(g))
		for i, ga := range g {
			red[i] = redactAttr(ga)
		}
		return slog.Group(a.Key, red...)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(a.Key, broker.Redact(x.Error()))
		case fmt.Stringer:
			return slog.String(a.Key, broker.Redact(x.String()))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

// defaultLogger sends warnings and errors to slog.Default() (looked up at
// each record, so a later slog.SetDefault applies), credentials hidden.
func defaultLogger() *slog.Logger {
	return slog.New(redactHandler{minLevel{min: slog.LevelWarn}})
}

// minLevel forwards records at or above min to h, or to slog.Default()'s
// handler when h is nil.
type minLevel struct {
	min slog.Level
	h   slog.Handler
}

func (m minLevel) handler() slog.Handler {
	if m.h != nil {
		return m.h
	}
	return slog.Default().Handler()
}

func (m minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= m.min && m.handler().Enabled(ctx, l)
}

func (m minLevel) Handle(ctx context.Context, r slog.Record) error { return m.handler().Handle(ctx, r) }

func (m minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{m.min, m.handler().WithAttrs(as)}
}

func (m minLevel) WithGroup(name string) slog.Handler {
	return minLevel{m.min, m.handler().WithGroup(name)}
}

// String describes the plugin by its adapter, without credentials: the
// plugin holds the adapter URL it was given, password included, which %v
// of the struct would print.
func (p *Plugin) String() string {
	if s, ok := p.adapter.(fmt.Stringer); ok {
		return "channels.Plugin(" + broker.Redact(s.String()) + ")"
	}
	if p.adapter != nil {
		return "channels.Plugin(" + p.adapter.Name() + ")"
	}
	if u, ok := p.o.adapterSpec.(string); ok {
		if d := broker.DisplayURL(u); d != "" {
			return "channels.Plugin(" + d + ")"
		}
	}
	return "channels.Plugin"
}

// GoString is String, for %#v.
func (p *Plugin) GoString() string { return p.String() }
