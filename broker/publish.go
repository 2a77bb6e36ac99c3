package broker

import (
	"fmt"
	"time"
)

// PublishOptions collects the options of one send. Each adapter honours what
// applies to it and documents the rest.
type PublishOptions struct {
	// Headers are user headers sent with the message.
	Headers map[string]string
	// Raw sends a []byte or string payload without serializing it.
	Raw bool
	// Key is the Kafka message key (also used for per-key ordering).
	Key []byte
	// Partition selects a Kafka partition; -1 (the default) lets the balancer choose.
	Partition int
	// Persistent asks AMQP for delivery mode 2. Defaults to true.
	Persistent bool
	// TTL is the AMQP per-message expiration.
	TTL time.Duration
	// Priority is the AMQP message priority.
	Priority uint8
	// CorrelationID is the AMQP correlation id.
	CorrelationID string
	// MessageID asks the broker to deduplicate on it where supported (NATS
	// Nats-Msg-Id, AMQP message-id).
	MessageID string
	// RoutingKey overrides the AMQP routing key.
	RoutingKey string
	// MaxLen caps a Redis stream (XADD MAXLEN); 0 means no cap.
	MaxLen int64
	// ApproxMaxLen makes the Redis cap approximate (MAXLEN ~).
	ApproxMaxLen bool
}

// PublishOption changes one send.
type PublishOption func(*PublishOptions) error

// NewPublishOptions applies opts over the defaults.
func NewPublishOptions(opts ...PublishOption) (PublishOptions, error) {
	o := PublishOptions{Partition: -1, Persistent: true}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return o, err
		}
	}
	return o, nil
}

// WithHeaders adds user headers. Names starting with "$" and "x-" are used by
// context propagation and retries; setting them by hand overrides those.
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

// WithRaw sends a []byte or string payload as is.
func WithRaw() PublishOption { return func(o *PublishOptions) error { o.Raw = true; return nil } }

// WithKey sets the Kafka message key.
func WithKey(key string) PublishOption {
	return func(o *PublishOptions) error { o.Key = []byte(key); return nil }
}

// WithPartition selects a Kafka partition.
func WithPartition(p int) PublishOption {
	return func(o *PublishOptions) error {
		if p < 0 {
			return fmt.Errorf("%w: partition must be >= 0", ErrInvalidOption)
		}
		o.Partition = p
		return nil
	}
}

// WithPersistent sets AMQP delivery mode (persistent by default).
func WithPersistent(p bool) PublishOption {
	return func(o *PublishOptions) error { o.Persistent = p; return nil }
}

// WithTTL sets the AMQP per-message expiration.
func WithTTL(d time.Duration) PublishOption {
	return func(o *PublishOptions) error {
		if d < 0 {
			return fmt.Errorf("%w: TTL must be >= 0", ErrInvalidOption)
		}
		o.TTL = d
		return nil
	}
}

// WithPriority sets the AMQP priority.
func WithPriority(p uint8) PublishOption {
	return func(o *PublishOptions) error { o.Priority = p; return nil }
}

// WithCorrelationID sets the AMQP correlation id.
func WithCorrelationID(id string) PublishOption {
	return func(o *PublishOptions) error { o.CorrelationID = id; return nil }
}

// WithMessageID sets a deduplication id where the broker supports one.
func WithMessageID(id string) PublishOption {
	return func(o *PublishOptions) error { o.MessageID = id; return nil }
}

// WithRoutingKey overrides the AMQP routing key.
func WithRoutingKey(k string) PublishOption {
	return func(o *PublishOptions) error { o.RoutingKey = k; return nil }
}

// WithMaxLen caps a Redis stream at n entries (approximately when approx is
// true). Trimming can remove entries that a group has not read yet; use it
// only when losing the oldest entries is acceptable.
func WithMaxLen(n int64, approx bool) PublishOption {
	return func(o *PublishOptions) error {
		if n < 0 {
			return fmt.Errorf("%w: MaxLen must be >= 0", ErrInvalidOption)
		}
		o.MaxLen, o.ApproxMaxLen = n, approx
		return nil
	}
}
