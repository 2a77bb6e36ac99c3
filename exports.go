package channels

import (
	"log/slog"
	"time"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/hooks"
)

// What a service author needs, from the one import of this package (the
// broker and hooks packages are for adapter authors and stay available; this
// also spares an alias where go-micro's own broker package is imported).

// SendOption changes one send (SendToChannel, the injected SendFunc, the
// trigger).
type SendOption = broker.PublishOption

// WithHeader adds one user header to a send.
func WithHeader(k, v string) SendOption { return broker.WithHeader(k, v) }

// WithHeaders adds user headers to a send. Names starting with "$" and
// "x-" are used by context propagation and retries.
func WithHeaders(h map[string]string) SendOption { return broker.WithHeaders(h) }

// WithKey gives a send a message key, carried on every broker and used by
// Kafka as the record key (order per key); see broker.WithKey and
// docs/portable.md.
func WithKey(key string) SendOption { return broker.WithKey(key) }

// WithRaw sends a []byte or string payload as it is, without serializing.
func WithRaw() SendOption { return broker.WithRaw() }

// WithSendOptions adds typed send options of an adapter package (for
// example redis.SendOptions{MaxLen: 1000}); the adapter refuses types it
// does not know.
func WithSendOptions(opts ...any) SendOption { return broker.WithAdapterOptions(opts...) }

// Where a new group starts (Channel.Start); see docs/portable.md for what
// each broker does with it.
type StartPosition = broker.StartPosition

var (
	// StartNewest starts a new group with the messages sent after it was
	// created (every adapter's default).
	StartNewest = broker.StartNewest
	// StartOldest starts a new group with the oldest message the broker
	// holds for the channel.
	StartOldest = broker.StartOldest
)

// StartAt starts a new group with the messages stored at or after t.
func StartAt(t time.Time) StartPosition { return broker.StartAt(t) }

// Retry delays.
type (
	// Backoff gives the delay before a retry (attempt is 1 after the first failure).
	Backoff = broker.Backoff
	// ConstantBackoff waits the same delay before every retry.
	ConstantBackoff = broker.ConstantBackoff
	// ExponentialBackoff waits Initial, then Initial*Multiplier, ... capped at Max.
	ExponentialBackoff = broker.ExponentialBackoff
	// BackoffFunc adapts a function to Backoff.
	BackoffFunc = broker.BackoffFunc
)

// Serializers (WithSerializer).
type (
	// JSON is the default serializer, moleculer's JSON on the wire.
	JSON = broker.JSON
	// MsgPack is moleculer's MsgPack serializer.
	MsgPack = broker.MsgPack
	// Raw passes []byte and string payloads through.
	Raw = broker.Raw
	// Serializer turns payloads into bytes and back.
	Serializer = broker.Serializer
)

// Interceptor types and the built-in interceptors.
type (
	// ChannelInterceptor wraps the handler of one channel (localChannel).
	ChannelInterceptor = hooks.ChannelInterceptor
	// SendInterceptor wraps sends (sendToChannel).
	SendInterceptor = hooks.SendInterceptor
	// SendBatchInterceptor wraps batch sends (SendBatch).
	SendBatchInterceptor = hooks.SendBatchInterceptor
)

// BatchItem is one message of a SendBatch: its payload and the send
// options of this message alone, applied after the options of the batch
// (a message id of its own, say). BatchOf makes items without options.
type BatchItem = hooks.BatchItem

// Recover turns a handler panic into an error (the kit recovers panics
// anyway; this one does it inside the chain, so outer interceptors see it).
func Recover() Interceptor { return hooks.Recover() }

// Logging logs each handler run and send at debug level, failures at warn.
func Logging(l *slog.Logger) Interceptor { return hooks.Logging(l) }

// Timeout bounds each handler run with its own deadline.
func Timeout(d time.Duration) Interceptor { return hooks.Timeout(d) }

// Errors and typed errors a service author meets.
var (
	// ErrPermanent marks a handler error that must not be retried (Permanent).
	ErrPermanent = broker.ErrPermanent
	// ErrMaxDeliveries is the cause written in the dead letter of a message
	// that kept killing its consumers (Channel.MaxDeliveries).
	ErrMaxDeliveries = broker.ErrMaxDeliveries
	// ErrMaxAttemptsExceeded is the cause of a message found over its
	// attempts without a recorded error.
	ErrMaxAttemptsExceeded = broker.ErrMaxAttemptsExceeded
)

type (
	// DrainError is returned by Stop when handlers were still running at its
	// deadline; it names their messages (delivered again later).
	DrainError = broker.DrainError
	// PublishError is a send the broker refused or did not confirm.
	PublishError = broker.PublishError
	// BatchError is what SendBatch returns when a message was not sent: one
	// error per message (nil for those sent), Failed() lists the others.
	BatchError = broker.BatchError
	// EncodeError is a payload or header that could not be serialized.
	EncodeError = broker.EncodeError
	// DecodeError is a payload or header that could not be decoded (poison).
	DecodeError = broker.DecodeError
	// RemoteError is an error read back from x-error-* headers.
	RemoteError = broker.RemoteError
	// UnsupportedError is a portable declaration (Channel.Start, WithKey)
	// the adapter cannot honour on its broker; it wraps ErrUnsupported and
	// ErrInvalidOption.
	UnsupportedError = broker.UnsupportedError
	// ConflictError is a portable declaration contradicted by an adapter
	// option given for the same channel; it wraps ErrInvalidOption.
	ConflictError = broker.ConflictError
	// Adapter is a broker adapter (the injected ChannelAdapter field's type).
	Adapter = broker.Adapter
	// ChannelRemover is implemented by adapters that can delete a channel
	// they created (Plugin.Adapter().(channels.ChannelRemover)).
	ChannelRemover = broker.ChannelRemover
)

// ErrorFromHeaders reads the error of a dead-lettered message back from its
// x-error-* headers (nil when there is none).
func ErrorFromHeaders(h map[string]string) *RemoteError { return broker.ErrorFromHeaders(h) }

// Permanent marks a handler error as not retryable: the message goes to the
// dead-letter queue (or is dropped) without further attempts.
func Permanent(err error) error { return broker.Permanent(err) }

// Event tells an outcome hook (WithObserver) how one delivery ended: ack,
// retry with a delay, dead-letter, drop, or release (handed back unrun or
// cut by a stop).
type Event = broker.Event

// Observer is an outcome hook: it sees every settled delivery and cannot
// change it. It runs on the handler's goroutine: keep it quick.
type Observer = broker.Observer

// Outcome actions, as found in Event.Outcome.Action.
const (
	ActionAck        = broker.Ack
	ActionRetry      = broker.Retry
	ActionDeadLetter = broker.DeadLetter
	ActionDrop       = broker.Drop
	ActionRelease    = broker.Release
)

// The sentinels of package broker, re-exported so callers need one import
// for errors.Is.
var (
	// ErrInvalidOption is wrapped by every configuration error.
	ErrInvalidOption = broker.ErrInvalidOption
	// ErrUnknownAdapter is returned for an unknown adapter type name or URL scheme.
	ErrUnknownAdapter = broker.ErrUnknownAdapter
	// ErrNotConnected is returned by SendToChannel before Start (or BeforeStart) connected the adapter.
	ErrNotConnected = broker.ErrNotConnected
	// ErrClosed is returned by SendToChannel after Stop.
	ErrClosed = broker.ErrClosed
	// ErrPublish wraps broker-side publish failures.
	ErrPublish = broker.ErrPublish
	// ErrEncode is wrapped by payloads that cannot be serialized.
	ErrEncode = broker.ErrEncode
	// ErrDecode is wrapped by payloads or headers that cannot be decoded.
	ErrDecode = broker.ErrDecode
	// ErrDrainTimeout is returned by Stop when handlers were still running when its context ended.
	ErrDrainTimeout = broker.ErrDrainTimeout
	// ErrUnsupported is wrapped by what the adapter cannot do on its broker
	// (an *UnsupportedError declaration, an optional ability it lacks).
	ErrUnsupported = broker.ErrUnsupported
)
