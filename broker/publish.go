package broker

import (
	"context"
	"fmt"
)

// PublishOptions collects the options of one send. Only what every broker
// honours is a field; what one broker alone understands is a typed value of
// that adapter's package in AdapterOptions (for example redis.SendOptions),
// and an adapter refuses a value of a type it does not know.
type PublishOptions struct {
	// Headers are user headers sent with the message.
	Headers map[string]string
	// Raw sends a []byte or string payload without serializing it.
	Raw bool
	// Key is the message key (WithKey): Kafka's record key, carried on
	// every broker in the HeaderKey header.
	Key string
	// AdapterOptions holds typed send options of adapter packages.
	AdapterOptions []any
	// Routed asks the adapter to refuse, with an error wrapping ErrPublish
	// and ErrNotFound, a send that no queue or stream would keep, where the
	// broker can tell (RabbitMQ: mandatory publish, returned unroutable;
	// JetStream: no stream stores the subject). Brokers that store every
	// accepted send in the channel itself (Redis, Kafka) need nothing. The
	// operations tooling sets it on the copies it sends before removing a
	// dead letter.
	Routed bool
}

// PublishOption changes one send.
type PublishOption func(*PublishOptions) error

// NewPublishOptions applies opts over the defaults.
func NewPublishOptions(opts ...PublishOption) (PublishOptions, error) {
	if len(opts) == 0 {
		return PublishOptions{}, nil // o below is on the heap (the options take its address)
	}
	o := new(PublishOptions)
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(o); err != nil {
			return *o, err
		}
	}
	return *o, nil
}

// WithHeaders adds user headers. Names starting with "$" carry the context
// (request id, caller, level, $meta): when the send has one (it is made from
// a handler, or its ctx has go-micro metadata or WithMeta) the context's
// values replace user values of the same names. Names starting with "x-" are
// those of retries and dead letters (x-redelivered-count, x-original-*,
// x-error-*): the adapters set them on the copies they make.
func WithHeaders(h map[string]string) PublishOption {
	return func(o *PublishOptions) error {
		if len(h) == 0 {
			return nil
		}
		if o.Headers == nil {
			o.Headers = make(map[string]string, len(h))
		}
		for k, v := range h {
			if k == "" {
				return fmt.Errorf("%w: empty header name", ErrInvalidOption)
			}
			o.Headers[k] = v
		}
		return nil
	}
}

// WithHeader adds one user header.
func WithHeader(k, v string) PublishOption { return WithHeaders(map[string]string{k: v}) }

// WithKey gives the message a key: the messages of one key keep their
// order where the broker orders by key (Kafka: the record key chooses the
// partition, and PerKey ordering runs them one at a time), and the key
// travels with the message in the HeaderKey header on every broker
// (Message.Key). On a broker with one queue or stream per channel (Redis,
// NATS JetStream, RabbitMQ, memory) every message of a channel, keyed or
// not, is delivered in the order it was stored; handlers run in that order
// with a group of one member and MaxInFlight 1. The key must not be empty.
func WithKey(key string) PublishOption {
	return func(o *PublishOptions) error {
		if key == "" {
			return fmt.Errorf("%w: WithKey: the key is empty", ErrInvalidOption)
		}
		o.Key = key
		return WithHeaders(map[string]string{HeaderKey: key})(o)
	}
}

// WithRaw sends a []byte or string payload as is.
func WithRaw() PublishOption { return func(o *PublishOptions) error { o.Raw = true; return nil } }

// WithAdapterOptions adds typed send options of an adapter package (for
// example redis.SendOptions{MaxLen: 1000}). A value that implements
// Validate() error is validated here. The adapter of the send refuses a
// value of a type it does not know, with ErrInvalidOption.
func WithAdapterOptions(opts ...any) PublishOption {
	return func(o *PublishOptions) error {
		for _, v := range opts {
			if v == nil {
				continue
			}
			if val, ok := v.(interface{ Validate() error }); ok {
				if err := val.Validate(); err != nil {
					return err
				}
			}
			o.AdapterOptions = append(o.AdapterOptions, v)
		}
		return nil
	}
}

// BatchPublisher is the optional ability of an adapter to send many messages
// to one channel in one go (a pipeline, a window of unconfirmed publishes,
// asynchronous acknowledgements). The plugin's SendBatch uses it; for an
// adapter without it, kit.PublishBatch falls back to concurrent Publish calls.
//
// PublishBatch returns nil when the broker accepted every message, otherwise
// a slice of len(msgs) errors in which errs[i] is the outcome of msgs[i]: nil
// when it was accepted as Publish would have returned, else the error Publish
// would have returned for it (*PublishError, *EncodeError, ErrNotConnected,
// ErrClosed, an ErrInvalidOption error for a send option of another adapter).
// It returns only once every message is settled; ctx bounds the whole call,
// and a message whose fate is unknown when ctx ends (written, not yet
// confirmed) is reported as failed. A failure of one message fails no other
// message unless their cause is shared (the connection was lost). Messages
// that the broker accepts are stored in slice order wherever the broker
// keeps an order for the channel. The caller may pass any number of
// messages: the adapter splits them into broker-sized rounds itself. msgs and
// their fields are read only and not kept after the call returns. It is safe
// for concurrent use, like Publish.
type BatchPublisher interface {
	PublishBatch(ctx context.Context, channel string, msgs []*Outgoing) []error
}

// BatchErrors returns errs, or nil when every entry is nil: the result of a
// batch in which every message was accepted.
func BatchErrors(errs []error) []error {
	for _, err := range errs {
		if err != nil {
			return errs
		}
	}
	return nil
}
