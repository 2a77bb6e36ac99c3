package hooks

import (
	"context"
	"log/slog"
	"time"

	"github.com/microchannels/channels/broker"
)

// Info describes the channel an interceptor wraps.
type Info struct {
	// Service is the service full name ("v2.payments").
	Service string
	// Key is the channel as declared in the schema (unprefixed).
	Key string
	// Channel is the full channel name on the broker.
	Channel string
	// Group is the consumer group.
	Group string
	// Adapter is the adapter type name.
	Adapter     string
	MaxInFlight int
}

// SendFunc sends a payload to a channel (the unprefixed name, as the caller gave it).
type SendFunc func(ctx context.Context, channel string, payload any, opts ...broker.PublishOption) error

// ChannelInterceptor wraps a channel handler (moleculer's localChannel hook).
type ChannelInterceptor func(next broker.Handler, info Info) broker.Handler

// SendInterceptor wraps SendToChannel (moleculer's sendToChannel hook).
type SendInterceptor func(next SendFunc) SendFunc

// Interceptor bundles the two hooks, like a moleculer middleware object.
// Either may be nil.
type Interceptor struct {
	Name          string
	LocalChannel  ChannelInterceptor
	SendToChannel SendInterceptor
}

// ChainHandler composes the LocalChannel hooks around h; the first
// interceptor is the outermost.
func ChainHandler(h broker.Handler, info Info, ics []Interceptor) broker.Handler {
	for i := len(ics) - 1; i >= 0; i-- {
		if ics[i].LocalChannel != nil {
			h = ics[i].LocalChannel(h, info)
		}
	}
	return h
}

// ChainSend composes the SendToChannel hooks around send; the first
// interceptor is the outermost.
func ChainSend(send SendFunc, ics []Interceptor) SendFunc {
	for i := len(ics) - 1; i >= 0; i-- {
		if ics[i].SendToChannel != nil {
			send = ics[i].SendToChannel(send)
		}
	}
	return send
}

// Recover turns a handler panic into a *broker.PanicError (the adapters
// recover as well; this makes the panic visible to outer interceptors).
func Recover() Interceptor {
	return Interceptor{Name: "Recover", LocalChannel: func(next broker.Handler, _ Info) broker.Handler {
		return func(ctx context.Context, msg *broker.Message) (err error) {
			defer func() {
				if r := recover(); r != nil {
					err = broker.NewPanicError(r)
				}
			}()
			return next(ctx, msg)
		}
	}}
}

// Logging logs every delivery (debug on success, warn on error, with its
// duration) and every send.
func Logging(l *slog.Logger) Interceptor {
	return Interceptor{
		Name: "Logging",
		LocalChannel: func(next broker.Handler, info Info) broker.Handler {
			return func(ctx context.Context, msg *broker.Message) error {
				start := time.Now()
				err := next(ctx, msg)
				if err != nil {
					l.WarnContext(ctx, "channels: handler failed", "channel", info.Channel, "group", info.Group,
						"id", msg.ID, "attempt", msg.Attempt, "took", time.Since(start), "error", err)
				} else {
					l.DebugContext(ctx, "channels: handled", "channel", info.Channel, "group", info.Group,
						"id", msg.ID, "attempt", msg.Attempt, "took", time.Since(start))
				}
				return err
			}
		},
		SendToChannel: func(next SendFunc) SendFunc {
			return func(ctx context.Context, channel string, payload any, opts ...broker.PublishOption) error {
				err := next(ctx, channel, payload, opts...)
				if err != nil {
					l.WarnContext(ctx, "channels: send failed", "channel", channel, "error", err)
				} else {
					l.DebugContext(ctx, "channels: sent", "channel", channel)
				}
				return err
			}
		},
	}
}

// Timeout gives every delivery a deadline of d. A handler that honours its
// context fails with context.DeadlineExceeded, which the retry policy
// handles like any error.
func Timeout(d time.Duration) Interceptor {
	return Interceptor{Name: "Timeout", LocalChannel: func(next broker.Handler, _ Info) broker.Handler {
		return func(ctx context.Context, msg *broker.Message) error {
			ctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			return next(ctx, msg)
		}
	}}
}
