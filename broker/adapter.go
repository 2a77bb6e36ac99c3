package broker

import (
	"context"
	"log/slog"
)

// Handler processes one delivery. A nil error acknowledges the message; an
// error makes the retry policy decide (retry, dead-letter or drop).
type Handler func(ctx context.Context, msg *Message) error

// Adapter is the contract between the plugin and one broker. It holds only
// what the plugin calls; optional abilities are separate small interfaces.
//
// Names handed to an adapter are final: the plugin has already applied the
// namespace prefix.
type Adapter interface {
	// Name is the adapter's type name ("Redis", "AMQP", "NATS", "Kafka", "Memory").
	Name() string
	// Connect opens connections. It may be called again after Close.
	Connect(ctx context.Context, env Env) error
	// Publish sends one message and returns once the broker accepted it.
	Publish(ctx context.Context, channel string, msg *Outgoing) error
	// Subscribe provisions everything the channel needs (streams, groups,
	// queues, consumers) and returns a subscription that has not started
	// delivering yet. Provisioning errors surface here.
	Subscribe(ctx context.Context, ch *Channel) (Subscription, error)
	// Close releases connections. Subscriptions must have been drained first;
	// Close drains any that were not, bounded by ctx.
	Close(ctx context.Context) error
}

// Subscription is a provisioned channel consumer.
type Subscription interface {
	// Start begins delivering. It cannot fail: connection problems after this
	// point are retried with backoff inside the adapter.
	Start()
	// Drain stops fetching, waits for in-flight handlers (bounded by ctx),
	// settles them, releases anything prefetched and returns. It is idempotent.
	Drain(ctx context.Context) error
}

// Env is what the plugin gives an adapter when it connects.
type Env struct {
	// NodeID identifies this process; adapters derive stable consumer names from it.
	NodeID string
	// Serializer encodes payloads and, where the wire format needs it, headers.
	Serializer Serializer
	// Logger receives the adapter's logs. Never nil after Normalize.
	Logger *slog.Logger
}

// Normalize fills defaults.
func (e Env) Normalize() Env {
	if e.Serializer == nil {
		e.Serializer = JSON{}
	}
	if e.Logger == nil {
		e.Logger = slog.New(slog.DiscardHandler)
	}
	if e.NodeID == "" {
		e.NodeID = "node"
	}
	return e
}

// Outgoing is a serialized message ready to be published.
type Outgoing struct {
	Payload []byte
	Headers map[string]string
	Options PublishOptions
}

// InstantPublisher marks an adapter whose Publish never waits on a broker
// (the in-process bus): the plugin then sends without its default publish
// deadline, which only bounds the wait for a broker's answer.
type InstantPublisher interface {
	Adapter
	// PublishesInstantly is a marker; it is never called.
	PublishesInstantly()
}

// LagReporter is the optional ability of an adapter to tell cheaply how far
// a group is behind on a channel; the plugin reports it as gauges.
type LagReporter interface {
	Lag(ctx context.Context, channel, group string) (GroupLag, error)
}

// GroupLag is the backlog of one group on one channel.
type GroupLag struct {
	// Lag counts the entries not yet delivered to the group; -1 when the
	// broker cannot tell.
	Lag int64
	// Pending counts the entries delivered and not yet acknowledged.
	Pending int64
}

// ChannelRemover is the optional ability to delete a channel with what the
// adapter created for it (stream, groups, queues, failure records): for
// tools, tests and demos that clean up after themselves. The plugin never
// calls it. Removing a channel that does not exist is not an error.
type ChannelRemover interface {
	RemoveChannel(ctx context.Context, channel string) error
}

// ChannelChecker is the optional ability of an adapter to validate a
// channel declaration without a connection: the types and values of its
// adapter options, the names it derives, the portable settings it maps.
// The plugin calls it at Register, so that a mistake is reported where the
// channel is declared rather than when the service starts; Subscribe checks
// the same again. CheckChannel must not change ch.
type ChannelChecker interface {
	CheckChannel(ch *Channel) error
}
