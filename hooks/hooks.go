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

// BatchItem is one message of a batch send: its payload and the send
// options of this message alone, applied after the options of the batch.
type BatchItem struct {
	Payload any
	Options []broker.PublishOption
}

// SendBatchFunc sends every item to one channel (the unprefixed name). It
// returns nil when every message was sent, otherwise one error per item, in
// order (nil for an item that was sent).
type SendBatchFunc func(ctx context.Context, channel string, items []BatchItem, opts ...broker.PublishOption) []error

// ChannelInterceptor wraps a channel handler (moleculer's localChannel hook).
type ChannelInterceptor func(next broker.Handler, info Info) broker.Handler

// SendInterceptor wraps SendToChannel (moleculer's sendToChannel hook).
type SendInterceptor func(next SendFunc) SendFunc

// SendBatchInterceptor wraps the batch send (Plugin.SendBatch). It must
// return nil or exactly one error per item.
type SendBatchInterceptor func(next SendBatchFunc) SendBatchFunc

// Interceptor bundles the hooks, like a moleculer middleware object. Any
// may be nil.
//
// A batch send reaches the broker as one batch only when every interceptor
// that has a SendToChannel hook also has a SendBatch hook (see
// [BatchCapable]); otherwise each message of the batch goes through the
// SendToChannel hooks on its own, so that no send ever skips an
// interceptor.
type Interceptor struct {
	Name          string
	LocalChannel  ChannelInterceptor
	SendToChannel SendInterceptor
	SendBatch     SendBatchInterceptor
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

// ChainSendBatch composes the SendBatch hooks around send; the first
// interceptor is the outermost.
func ChainSendBatch(send SendBatchFunc, ics []Interceptor) SendBatchFunc {
	for i := len(ics) - 1; i >= 0; i-- {
		if ics[i].SendBatch != nil {
			send = ics[i].SendBatch(send)
		}
	}
	return send
}

// BatchCapable reports whether a batch can go through ics as one batch:
// every interceptor with a SendToChannel hook has a SendBatch hook too.
func BatchCapable(ics []Interceptor) bool {
	for _, ic := range ics {
		if ic.SendToChannel != nil && ic.SendBatch == nil {
			return false
		}
	}
	return true
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
// duration), every send, and every batch send (one line: how many messages
// were sent, and on failure how many were not, with the first error). A
// record whose level l does not log costs no allocation: its attributes are
// only built once l.Enabled says yes. Errors are logged with the
// credentials of any URL or key=value secret in them redacted
// (broker.Redact), as the library's own log lines are.
func Logging(l *slog.Logger) Interceptor {
	return Interceptor{
		Name: "Logging",
		LocalChannel: func(next broker.Handler, info Info) broker.Handler {
			return func(ctx context.Context, msg *broker.Message) error {
				start := time.Now()
				err := next(ctx, msg)
				if err != nil {
					if l.Enabled(ctx, slog.LevelWarn) {
						l.WarnContext(ctx, "channels: handler failed", "channel", info.Channel, "group", info.Group,
							"id", msg.ID, "attempt", msg.Attempt, "took", time.Since(start), "error", redacted(err))
					}
				} else if l.Enabled(ctx, slog.LevelDebug) {
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
					if l.Enabled(ctx, slog.LevelWarn) {
						l.WarnContext(ctx, "channels: send failed", "channel", channel, "error", redacted(err))
					}
				} else if l.Enabled(ctx, slog.LevelDebug) {
					l.DebugContext(ctx, "channels: sent", "channel", channel)
				}
				return err
			}
		},
		SendBatch: func(next SendBatchFunc) SendBatchFunc {
			return func(ctx context.Context, channel string, items []BatchItem, opts ...broker.PublishOption) []error {
				errs := next(ctx, channel, items, opts...)
				failed, first := 0, -1
				for i, err := range errs {
					if err != nil {
						if first < 0 {
							first = i
						}
						failed++
					}
				}
				if failed > 0 {
					if l.Enabled(ctx, slog.LevelWarn) {
						l.WarnContext(ctx, "channels: batch send failed", "channel", channel, "messages", len(items),
							"failed", failed, "first", first, "error", redacted(errs[first]))
					}
				} else if l.Enabled(ctx, slog.LevelDebug) {
					l.DebugContext(ctx, "channels: sent batch", "channel", channel, "messages", len(items))
				}
				return errs
			}
		},
	}
}

// redacted is err's text without credentials.
func redacted(err error) string { return broker.Redact(err.Error()) }

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
