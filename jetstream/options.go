package jetstream

import (
	"fmt"
	"time"

	"github.com/microchannels/channels/kit"

	js "github.com/nats-io/nats.go/jetstream"

	"github.com/microchannels/channels/broker"
)

// Defaults of the NATS JetStream adapter.
const (
	// DefaultURL is used when the adapter is named by its type name alone.
	DefaultURL = "nats://127.0.0.1:4222"
	// DefaultAckWait is the consumer's AckWait: a message whose consumer
	// neither acknowledged it nor reported progress for that long (a crashed
	// process) is delivered again.
	DefaultAckWait = 30 * time.Second
	// DefaultMaxAckPending bounds the unacknowledged messages of a whole
	// group (running, and waiting for a retry: a message in backoff stays
	// pending on the server). The consumer's MaxAckPending is the larger of
	// it and the channel's MaxInFlight.
	DefaultMaxAckPending = 1000
	// DefaultFetchTimeout is the expiry of one pull request (a drain ends it
	// at once).
	DefaultFetchTimeout = 5 * time.Second
	// DefaultKeepDelay is how long a message whose dead-letter publish
	// failed waits before it is delivered again (and dead-lettered without
	// running).
	DefaultKeepDelay = time.Second
	// DefaultMaxDeliver is the consumer's MaxDeliver: the server stops
	// delivering a message after that many deliveries. The kit gives a
	// message up long before (RetryPolicy.MaxDeliveries, 9 by default,
	// releases not counted); this bound is the backstop for a message that
	// never reaches the kit (a client that cannot read it), so that it
	// cannot come back every AckWait for ever. A channel whose
	// MinMaxDeliver is higher gets that instead. A message stopped by it
	// stays in the stream; the server's
	// $JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES advisory is logged (at
	// Error) by every member of the group.
	DefaultMaxDeliver = 1000
	// DefaultDeadLetterMaxAge and DefaultDeadLetterMaxMsgs bound a
	// dead-letter stream without an age or a count bound of its own (the
	// oldest dead letters go first); DeadLetterStream options override
	// them. There is no default MaxBytes: a stream's MaxBytes reserves that
	// much of the server's store (an embedded server of 1 GiB would hold a
	// few dead-letter streams only); set DeadLetterStream.MaxBytes to bound
	// the bytes.
	DefaultDeadLetterMaxAge  = 7 * 24 * time.Hour
	DefaultDeadLetterMaxMsgs = 100_000
	// DefaultRecordsBucket is the key-value bucket of the failure records.
	DefaultRecordsBucket = "channels_records"
	// DefaultRecordTTL is how long a failure record is kept when its message
	// is never acknowledged (it is deleted with the ack).
	DefaultRecordTTL = 24 * time.Hour
	// DefaultOpTimeout bounds the adapter's own requests that no caller's
	// context bounds (records, flushes, provisioning at a reconnection).
	DefaultOpTimeout = 5 * time.Second
)

// DeliverPolicy is where a new group starts reading its channel. The zero
// value means "not set": a new group starts with new messages
// ([DeliverNew]) and an existing group keeps the position it has.
type DeliverPolicy int

const (
	deliverUnset DeliverPolicy = iota
	// DeliverNew starts with the messages published after the group was
	// created (the default, as in @moleculer/channels).
	DeliverNew
	// DeliverAll replays the whole stream.
	DeliverAll
	// DeliverLast starts with the last message of the stream.
	DeliverLast
	// DeliverLastPerSubject starts with the last message of each subject.
	DeliverLastPerSubject
	// DeliverByStartSequence starts at ChannelOptions.StartSequence.
	DeliverByStartSequence
	// DeliverByStartTime starts with the first message stored at or after
	// ChannelOptions.StartTime.
	DeliverByStartTime
)

func (p DeliverPolicy) native() js.DeliverPolicy {
	switch p {
	case DeliverAll:
		return js.DeliverAllPolicy
	case DeliverLast:
		return js.DeliverLastPolicy
	case DeliverLastPerSubject:
		return js.DeliverLastPerSubjectPolicy
	case DeliverByStartSequence:
		return js.DeliverByStartSequencePolicy
	case DeliverByStartTime:
		return js.DeliverByStartTimePolicy
	}
	return js.DeliverNewPolicy
}

// StreamOptions shape the stream of a channel (and of its dead-letter
// queue). Zero fields are "not set": a new stream gets the server's
// defaults, an existing stream keeps its value. A set field that differs
// from the existing stream updates it; a change the server does not allow
// (storage, for example) is a *ConfigError wrapping ErrUpdateNotAllowed.
type StreamOptions struct {
	// Name overrides the stream name (default: the channel name with dots
	// turned into underscores). Several channels may share one stream
	// when Subjects covers them (e.g. "orders.>").
	Name string
	// Subjects overrides the stream's subjects (default: the channel name).
	Subjects []string
	// MaxAge, MaxMsgs, MaxBytes, MaxMsgSize and Discard bound the stream.
	MaxAge     time.Duration
	MaxMsgs    int64
	MaxBytes   int64
	MaxMsgSize int32
	Discard    js.DiscardPolicy
	// Retention: limits (the zero value), interest or work queue.
	Retention js.RetentionPolicy
	// Storage: file (the zero value) or memory.
	Storage js.StorageType
	// Replicas in a clustered JetStream.
	Replicas int
	// Duplicates is the window in which a message id (WithMsgID) is
	// deduplicated (server default 2 minutes).
	Duplicates time.Duration
	// Configure, when set, edits the final configuration (any field
	// nats.go knows) before it is created or compared.
	Configure func(*js.StreamConfig)

	// onCreate sets the defaults of a stream that does not exist yet,
	// before the set fields and Configure apply; an existing stream never
	// gets them.
	onCreate func(*js.StreamConfig)
}

// ChannelOptions are the consumer and stream settings of a channel. Set
// them adapter-wide with WithChannelOptions, or per channel by putting a
// ChannelOptions value in the channel's AdapterOptions; zero fields take
// the adapter value, then the defaults.
type ChannelOptions struct {
	// AckWait is the consumer's AckWait (default 30s). A live handler
	// reports progress every InProgressInterval, so only the messages of a
	// crashed process wait it out. Not set: an existing group keeps its own.
	AckWait time.Duration
	// InProgressInterval is how often running messages are reported in
	// progress (default AckWait/3).
	InProgressInterval time.Duration
	// MaxAckPending bounds the unacknowledged messages of the whole group
	// (default the larger of DefaultMaxAckPending and twice MaxInFlight: the
	// running messages and as many read ahead). It must
	// leave room for the messages waiting in backoff.
	MaxAckPending int
	// DeliverPolicy is where a new group starts (default DeliverNew). For
	// an existing group a different policy is a *ConfigError.
	DeliverPolicy DeliverPolicy
	// StartSequence is the first stream sequence of DeliverByStartSequence.
	StartSequence uint64
	// StartTime is the start of DeliverByStartTime.
	StartTime time.Time
	// portable is the policy of a portable start position (the channel's
	// broker.StartPosition): used for a new consumer only, never checked
	// against an existing one.
	portable     DeliverPolicy
	portableTime time.Time
	// FetchTimeout is the expiry of one pull request (default 5s).
	FetchTimeout time.Duration
	// MaxDeliver is the consumer's MaxDeliver (default the larger of
	// DefaultMaxDeliver and MinMaxDeliver); -1 lets the server deliver a
	// message without bound. A set value under the channel's
	// MinMaxDeliver is refused by Subscribe (*MaxDeliverError): releases
	// (messages handed back unrun at a stop) and dead-letter refusals
	// count as deliveries on the server.
	MaxDeliver int
	// AckSync makes each acknowledgement a request the server confirms
	// (double ack), at the price of a round trip per message; by default
	// an ack is written on the connection and flushed with the next batch
	// of writes (a lost ack means a redelivery after AckWait).
	AckSync bool
	// Stream shapes the channel's stream.
	Stream StreamOptions
	// DeadLetterStream shapes the stream of the dead-letter queue; the
	// channel's Stream options do not apply to it. Unset fields get the
	// server's defaults (limits retention), except its bounds: a
	// dead-letter stream created without MaxAge gets
	// DefaultDeadLetterMaxAge, one without MaxMsgs DefaultDeadLetterMaxMsgs
	// (MaxMsgs -1, or Configure, asks for no bound). An existing
	// dead-letter stream keeps its bounds unless these options set them. A
	// dead-letter stream keeps what it is given even when nobody reads it:
	// interest retention (which stores nothing while the stream has no
	// consumer) is used only when Retention asks for it, and an existing
	// dead-letter stream with interest retention is turned to limits
	// retention otherwise.
	DeadLetterStream StreamOptions
}

// Validate checks the options.
func (o ChannelOptions) Validate() error {
	switch {
	case o.AckWait < 0:
		return fmt.Errorf("%w: jetstream AckWait must be > 0", broker.ErrInvalidOption)
	case o.AckWait > 0 && o.AckWait < 100*time.Millisecond:
		return fmt.Errorf("%w: jetstream AckWait must be at least 100ms", broker.ErrInvalidOption)
	case o.InProgressInterval < 0:
		return fmt.Errorf("%w: jetstream InProgressInterval must be > 0", broker.ErrInvalidOption)
	case o.AckWait > 0 && o.InProgressInterval >= o.AckWait:
		return fmt.Errorf("%w: jetstream InProgressInterval (%s) must be shorter than AckWait (%s)",
			broker.ErrInvalidOption, o.InProgressInterval, o.AckWait)
	case o.MaxDeliver < -1:
		return fmt.Errorf("%w: jetstream MaxDeliver must be > 0, or -1 for no bound", broker.ErrInvalidOption)
	case o.MaxAckPending < 0:
		return fmt.Errorf("%w: jetstream MaxAckPending must be > 0", broker.ErrInvalidOption)
	case o.FetchTimeout < 0, o.FetchTimeout > 0 && o.FetchTimeout < 100*time.Millisecond:
		return fmt.Errorf("%w: jetstream FetchTimeout must be at least 100ms", broker.ErrInvalidOption)
	case o.DeliverPolicy < deliverUnset || o.DeliverPolicy > DeliverByStartTime:
		return fmt.Errorf("%w: jetstream DeliverPolicy %d is unknown", broker.ErrInvalidOption, o.DeliverPolicy)
	case o.DeliverPolicy == DeliverByStartSequence && o.StartSequence == 0:
		return fmt.Errorf("%w: jetstream DeliverByStartSequence needs StartSequence", broker.ErrInvalidOption)
	case o.DeliverPolicy == DeliverByStartTime && o.StartTime.IsZero():
		return fmt.Errorf("%w: jetstream DeliverByStartTime needs StartTime", broker.ErrInvalidOption)
	case o.Stream.MaxAge < 0, o.Stream.Duplicates < 0, o.Stream.Replicas < 0,
		o.DeadLetterStream.MaxAge < 0, o.DeadLetterStream.Duplicates < 0, o.DeadLetterStream.Replicas < 0:
		return fmt.Errorf("%w: jetstream stream MaxAge, Duplicates and Replicas must be >= 0", broker.ErrInvalidOption)
	}
	return nil
}

func (o ChannelOptions) maxDeliver() int {
	if o.MaxDeliver == 0 {
		return DefaultMaxDeliver
	}
	return o.MaxDeliver
}

// MinMaxDeliver is the lowest MaxDeliver a channel's consumer may have:
// four times the deliveries the kit allows a message (RetryPolicy's
// MaxDeliveries), room for as many dead-letter refusals and as many
// releases (which the server counts as deliveries, the kit does not).
func MinMaxDeliver(ch *broker.Channel) int {
	md := ch.Retry.MaxDeliveries
	if md <= 0 {
		md = ch.Retry.MaxRetries + 1 + broker.DefaultExtraDeliveries
	}
	return 4 * md
}

// checkMaxDeliver sets the default MaxDeliver of ch, or refuses a set one
// under MinMaxDeliver.
func (o *ChannelOptions) checkMaxDeliver(ch *broker.Channel) error {
	least := MinMaxDeliver(ch)
	switch {
	case o.MaxDeliver == 0:
		o.MaxDeliver = max(DefaultMaxDeliver, least)
	case o.MaxDeliver > 0 && o.MaxDeliver < least:
		return &MaxDeliverError{Channel: ch.Name, MaxDeliver: o.MaxDeliver, Min: least}
	}
	return nil
}

func (o ChannelOptions) withDefaults() ChannelOptions {
	if o.FetchTimeout == 0 {
		o.FetchTimeout = DefaultFetchTimeout
	}
	return o
}

// SendOptions are the JetStream-only options of one send, passed with
// broker.WithAdapterOptions or the With* send options of this package.
// Several values are merged, later fields winning.
type SendOptions struct {
	// MsgID is the message id (Nats-Msg-Id): a second message with the
	// same id within the stream's Duplicates window is stored once (the
	// send succeeds, nothing is added).
	MsgID string
	// ExpectLastSequence refuses the send unless the stream's last
	// sequence is this one.
	ExpectLastSequence uint64
	// ExpectLastMsgID refuses the send unless the stream's last message id
	// is this one.
	ExpectLastMsgID string
	// ExpectStream refuses the send unless the subject is stored by this
	// stream.
	ExpectStream string
}

// WithMsgID sends with a message id: duplicates within the stream's
// Duplicates window are stored once.
func WithMsgID(id string) broker.PublishOption {
	return broker.WithAdapterOptions(SendOptions{MsgID: id})
}

// WithExpectLastSequence refuses the send unless the stream's last
// sequence is seq (optimistic concurrency).
func WithExpectLastSequence(seq uint64) broker.PublishOption {
	return broker.WithAdapterOptions(SendOptions{ExpectLastSequence: seq})
}

// WithExpectLastMsgID refuses the send unless the stream's last message id
// is id.
func WithExpectLastMsgID(id string) broker.PublishOption {
	return broker.WithAdapterOptions(SendOptions{ExpectLastMsgID: id})
}

// isSendOption: send options of this package are SendOptions values.
var isSendOption = kit.IsOf[SendOptions]

// sendOptions merges every SendOptions value of a send.
func sendOptions(opts []any) (SendOptions, bool) {
	return kit.MergedOption(opts, kit.Overlay[SendOptions])
}
