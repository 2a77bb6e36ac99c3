package amqp

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/microchannels/channels/kit"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels/broker"
)

// Defaults of the AMQP adapter.
const (
	// DefaultURL is used when the adapter is named by its type name alone
	// ("AMQP"); amqp091 fills in the guest/guest credentials.
	DefaultURL = "amqp://127.0.0.1:5672/"
	// DefaultExchangeType is the type of the channel exchange P.n, as
	// @moleculer/channels declares it.
	DefaultExchangeType = "fanout"
	// DefaultPublisherChannels is the number of AMQP channels (in confirm
	// mode) that sends share; each send waits only for its own confirm, so
	// concurrent sends pipeline on them.
	DefaultPublisherChannels = 4
	// DefaultHeartbeat is the AMQP heartbeat interval: a dead TCP connection
	// is noticed within about two of them.
	DefaultHeartbeat = 10 * time.Second
	// DefaultDialTimeout bounds one connection attempt (TCP, TLS and AMQP
	// handshakes).
	DefaultDialTimeout = 30 * time.Second
	// DefaultOpTimeout bounds the adapter's own broker calls that no
	// caller's context bounds (declarations made on resume, consumer
	// cancels, hand-backs).
	DefaultOpTimeout = 10 * time.Second
	// DefaultRetryQueueLease is the shortest x-expires of a retry queue: an
	// unused retry queue (no retry published through it for that long, nor
	// declared) is deleted by RabbitMQ. The lease is at least twice the
	// queue's delay plus a minute, and it is renewed by the sends.
	DefaultRetryQueueLease = 10 * time.Minute
	// DefaultKeepDelay is how long a message whose dead-letter publish failed
	// waits before it is dead-lettered again.
	DefaultKeepDelay = time.Second
	// DefaultSettleFailureDelay is how long a message whose settling failed
	// (its retry copy or dead letter could not be published) stays unacked
	// before it is handed back to the queue, so that a lasting failure does
	// not spin.
	DefaultSettleFailureDelay = time.Second
)

// Queue types of a group queue (ChannelOptions.QueueType).
const (
	// QueueQuorum declares new group queues as quorum queues (the default):
	// replicated, with a delivery limit (x-delivery-limit) after which
	// RabbitMQ dead-letters a message itself, even one no client can read.
	QueueQuorum = "quorum"
	// QueueClassic declares group queues as classic queues, with no
	// x-queue-type argument, as @moleculer/channels 0.1.8 and earlier
	// versions of this adapter declare them.
	QueueClassic = "classic"
)

// Header names of this adapter (besides the shared ones of package broker).
const (
	// HeaderUnfinished counts the deliveries of a message that ended without
	// a result (the consumer was killed, its channel or connection was lost,
	// or it was handed back unrun). On classic queues the adapter writes it
	// when a message comes back with the redelivered flag set; on quorum
	// queues RabbitMQ's x-delivery-count is added to it.
	HeaderUnfinished = "x-channels-unfinished"
	// HeaderFinal marks a copy whose last failure is final: its dead-letter
	// publish failed, it is dead-lettered again without running.
	HeaderFinal = "x-channels-final"
	// HeaderDeliveryCount is the delivery counter RabbitMQ sets on messages
	// redelivered from a quorum queue.
	HeaderDeliveryCount = "x-delivery-count"
	// HeaderOwner names the group whose copy of a message carries
	// HeaderUnfinished (a hand-back or a recount): the bookkeeping headers
	// are read only on the copies of the group that wrote them (x-group,
	// on retries and kept dead letters, says the same).
	HeaderOwner = "x-channels-group"
)

// QueueOptions are the arguments of a queue declaration (amqplib's
// assertQueue options). Zero values take the adapter-wide value, then the
// defaults: durable, not exclusive, not auto-deleted, no arguments (as
// @moleculer/channels declares its queues, so both can declare the same
// queue).
type QueueOptions struct {
	// Durable queues survive a broker restart (nil: true).
	Durable *bool
	// Exclusive queues belong to the declaring connection.
	Exclusive bool
	// AutoDelete queues are deleted when their last consumer goes.
	AutoDelete bool
	// Arguments are x-arguments (x-queue-type, x-max-length, ...); they are
	// merged key by key over the adapter-wide ones.
	Arguments amqp091.Table
}

// ExchangeOptions are the arguments of an exchange declaration.
type ExchangeOptions struct {
	// Type is the exchange type (default "fanout").
	Type string
	// Durable exchanges survive a broker restart (nil: true).
	Durable *bool
	// AutoDelete exchanges are deleted when their last binding goes.
	AutoDelete bool
	// Arguments are merged key by key over the adapter-wide ones.
	Arguments amqp091.Table
}

// ConsumerOptions are the arguments of basic.consume.
type ConsumerOptions struct {
	// Exclusive asks to be the queue's only consumer.
	Exclusive bool
	// Arguments (x-priority, ...) are merged key by key over the
	// adapter-wide ones.
	Arguments amqp091.Table
}

// ChannelOptions configure the queue, exchange and consumer of a channel.
// Set them adapter-wide with [WithChannelOptions], or per channel by putting
// a ChannelOptions value in the channel's AdapterOptions; a field left zero
// takes the adapter-wide value, then the default. The prefetch count of a
// consumer is always its channel's MaxInFlight.
type ChannelOptions struct {
	// QueueType is the type of the group queue when it is created:
	// QueueQuorum (default) or QueueClassic. An x-queue-type in
	// Queue.Arguments takes precedence. See the package documentation
	// (Queue types) for what happens with a queue that already exists.
	QueueType string
	Queue     QueueOptions
	Exchange  ExchangeOptions
	Consumer  ConsumerOptions
	// BindingKey binds the group queue to the channel exchange (default "":
	// what a fanout exchange ignores).
	BindingKey string
	// DeadLetterQueue are the options of the dead-letter queue (default: the
	// adapter-wide Queue options, as @moleculer/channels does).
	DeadLetterQueue QueueOptions
}

// SendOptions are the AMQP-only options of one send, passed with
// broker.WithAdapterOptions or the With* helpers of this package. Several
// values are merged, later non-zero fields winning.
type SendOptions struct {
	// RoutingKey of basic.publish (default ""; a fanout exchange ignores it).
	RoutingKey string
	// Queue sends straight to this queue through the default exchange ""
	// (the routing key is the queue name); the channel exchange is not used
	// and not declared. This is @moleculer/channels' `channelName ""` with
	// `routingKey`.
	Queue string
	// Priority of the message (for queues declared with x-max-priority).
	Priority uint8
	// Expiration is the per-message TTL (0: none); a retry copy does not
	// keep it.
	Expiration time.Duration
	// DeliveryMode is amqp091.Persistent (the default) or amqp091.Transient.
	DeliveryMode uint8
	// CorrelationID and MessageID set the properties of the same names. The
	// message id is the Message.ID handlers see; a send without one gets a
	// unique id.
	CorrelationID string
	MessageID     string
	// ContentType and Type set the properties of the same names.
	ContentType string
	Type        string
	// Mandatory makes a message that no queue receives an error
	// (basic.return) instead of being dropped by RabbitMQ.
	Mandatory bool
}

// Validate checks the options.
func (o SendOptions) Validate() error {
	switch {
	case o.Expiration < 0:
		return fmt.Errorf("%w: amqp Expiration must be >= 0", broker.ErrInvalidOption)
	case o.DeliveryMode > amqp091.Persistent:
		return fmt.Errorf("%w: amqp DeliveryMode must be amqp091.Transient or amqp091.Persistent", broker.ErrInvalidOption)
	}
	return nil
}

// WithRoutingKey sets the routing key of a send.
func WithRoutingKey(key string) broker.PublishOption {
	return broker.WithAdapterOptions(SendOptions{RoutingKey: key})
}

// WithQueue sends straight to queue through the default exchange (the
// channel name of the send then only labels errors).
func WithQueue(queue string) broker.PublishOption {
	return broker.WithAdapterOptions(SendOptions{Queue: queue})
}

// WithPriority sets the message priority.
func WithPriority(p uint8) broker.PublishOption {
	return broker.WithAdapterOptions(SendOptions{Priority: p})
}

// WithExpiration sets the per-message TTL.
func WithExpiration(ttl time.Duration) broker.PublishOption {
	return broker.WithAdapterOptions(SendOptions{Expiration: ttl})
}

// WithTransient sends a non-persistent message (lost when the broker
// restarts, faster to confirm).
func WithTransient() broker.PublishOption {
	return broker.WithAdapterOptions(SendOptions{DeliveryMode: amqp091.Transient})
}

// WithCorrelationID sets the correlation id property.
func WithCorrelationID(id string) broker.PublishOption {
	return broker.WithAdapterOptions(SendOptions{CorrelationID: id})
}

// WithMessageID sets the message id property (Message.ID of the handlers).
func WithMessageID(id string) broker.PublishOption {
	return broker.WithAdapterOptions(SendOptions{MessageID: id})
}

// WithMandatory makes an unroutable message a send error.
func WithMandatory() broker.PublishOption {
	return broker.WithAdapterOptions(SendOptions{Mandatory: true})
}

// Bool returns a pointer to v, for the Durable fields.
func Bool(v bool) *bool { return &v }

// isSendOption: send options of this package are SendOptions values.
var isSendOption = kit.IsOf[SendOptions]

// sendOptions merges every SendOptions value of a send.
func sendOptions(opts []any) SendOptions {
	so, _ := kit.MergedOption(opts, kit.Overlay[SendOptions])
	return so
}

func (o ChannelOptions) withDefaults() ChannelOptions {
	if o.Exchange.Type == "" {
		o.Exchange.Type = DefaultExchangeType
	}
	return o
}

// Validate checks the options.
func (o ChannelOptions) Validate() error {
	for _, t := range []amqp091.Table{o.Queue.Arguments, o.Exchange.Arguments, o.Consumer.Arguments, o.DeadLetterQueue.Arguments} {
		if err := t.Validate(); err != nil {
			return fmt.Errorf("%w: amqp arguments: %w", broker.ErrInvalidOption, err)
		}
	}
	switch o.QueueType {
	case "", QueueQuorum, QueueClassic:
	default:
		return fmt.Errorf("%w: amqp queue type %q (want %q or %q)", broker.ErrInvalidOption, o.QueueType, QueueQuorum, QueueClassic)
	}
	switch o.Exchange.Type {
	case "", "fanout", "direct", "topic", "headers":
	default:
		if !strings.HasPrefix(o.Exchange.Type, "x-") {
			return fmt.Errorf("%w: amqp exchange type %q", broker.ErrInvalidOption, o.Exchange.Type)
		}
	}
	return nil
}

func durable(b *bool) bool { return b == nil || *b }

// Option configures an Adapter.
type Option func(*Adapter) error

// WithChannelOptions sets the adapter-wide queue, exchange and consumer
// options (per-channel ChannelOptions override them field by field).
func WithChannelOptions(o ChannelOptions) Option {
	return func(a *Adapter) error {
		if err := o.Validate(); err != nil {
			return err
		}
		a.chanOpts = kit.Overlay(a.chanOpts, o)
		return nil
	}
}

// WithQueueType sets the type of the group queues the adapter creates:
// QueueQuorum (the default) or QueueClassic. It is
// WithChannelOptions(ChannelOptions{QueueType: t}).
func WithQueueType(t string) Option { return WithChannelOptions(ChannelOptions{QueueType: t}) }

// WithTLS sets the TLS configuration (amqps:// URLs get a default one).
func WithTLS(cfg *tls.Config) Option {
	return func(a *Adapter) error {
		if a.external != nil {
			return fmt.Errorf("%w: WithTLS needs an adapter that dials its own connection", broker.ErrInvalidOption)
		}
		a.config.TLSClientConfig = cfg
		return nil
	}
}

// WithConfig sets the amqp091 connection configuration (vhost, heartbeat,
// SASL, client properties, dialer). Its Recovery field is ignored: the
// adapter recovers connections and channels itself.
func WithConfig(cfg amqp091.Config) Option {
	return func(a *Adapter) error {
		if a.external != nil {
			return fmt.Errorf("%w: WithConfig needs an adapter that dials its own connection", broker.ErrInvalidOption)
		}
		tlsCfg := a.config.TLSClientConfig
		a.config = cfg
		a.config.Recovery = nil
		if a.config.TLSClientConfig == nil {
			a.config.TLSClientConfig = tlsCfg
		}
		return nil
	}
}

// WithPublisherChannels sets the number of confirm-mode AMQP channels sends
// share (default 4).
func WithPublisherChannels(n int) Option {
	return func(a *Adapter) error {
		if n < 1 {
			return fmt.Errorf("%w: amqp publisher channels must be >= 1", broker.ErrInvalidOption)
		}
		a.pubChannels = n
		return nil
	}
}

// WithPublishAssertExchange turns the declaration of a channel's exchange
// before its first send on (the default) or off. With it off, a send to a
// channel whose exchange does not exist fails with a *broker.PublishError
// (404 NOT_FOUND), as with @moleculer/channels' default.
func WithPublishAssertExchange(enabled bool) Option {
	return func(a *Adapter) error { a.noAssertExchange = !enabled; return nil }
}

// WithReconnectBackoff paces the reconnection attempts and the resumption of
// consumers (default kit.DefaultReconnectBackoff: 100 ms doubling to 5 s).
func WithReconnectBackoff(b broker.Backoff) Option {
	return func(a *Adapter) error {
		if b == nil {
			return fmt.Errorf("%w: amqp reconnect backoff is nil", broker.ErrInvalidOption)
		}
		a.reconnect = b
		return nil
	}
}

// parseURLs splits a ';'-separated failover list and checks every URL. A
// URL whose '@' is not where the parser ends the user info (a password
// with an unescaped '/', '#' or '?', which the parser would take for a
// port, a path or a fragment) is refused: it would dial the wrong host,
// and part of the password would show as a port. No error repeats the URL,
// only its scheme and host.
func parseURLs(raw string) ([]string, error) {
	var urls []string
	for _, s := range strings.Split(raw, ";") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		shown := displayURL(s)
		u, err := amqp091.ParseURI(s)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				// The parser's error quotes the URL, password included.
				return nil, fmt.Errorf("%w: amqp URL %s cannot be parsed (percent-encode the reserved characters / # ? @ : of a user name or password)",
					broker.ErrInvalidOption, shown)
			}
			return nil, fmt.Errorf("%w: amqp URL %s: %w", broker.ErrInvalidOption, shown, broker.Redacted(err))
		}
		if u.Scheme != "amqp" && u.Scheme != "amqps" {
			return nil, fmt.Errorf("%w: amqp URL scheme must be amqp:// or amqps://, got %q", broker.ErrInvalidOption, u.Scheme)
		}
		if pu, err := url.Parse(s); err != nil || (strings.Contains(s, "@") && pu.Host != afterUserInfo(s)) {
			return nil, fmt.Errorf("%w: amqp URL %s: its '@' is not at the end of the user info: percent-encode the reserved characters / # ? @ : of the user name and password",
				broker.ErrInvalidOption, shown)
		}
		urls = append(urls, s)
	}
	if len(urls) == 0 {
		return nil, fmt.Errorf("%w: amqp URL is empty", broker.ErrInvalidOption)
	}
	return urls, nil
}

// afterUserInfo is the host and port of a URL taken as a person would read
// it: after its last '@' (everything before is user info), up to the path.
func afterUserInfo(raw string) string {
	rest := raw
	if i := strings.Index(rest, "://"); i >= 0 {
		rest = rest[i+3:]
	}
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		rest = rest[i+1:]
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	return rest
}

// displayURL is how a URL appears in String() and errors: its scheme and
// host only, never its user info, virtual host or query.
func displayURL(raw string) string {
	scheme := "amqp"
	if i := strings.Index(raw, "://"); i >= 0 && i < 10 {
		scheme = strings.ToLower(raw[:i])
	}
	return scheme + "://" + afterUserInfo(raw)
}
