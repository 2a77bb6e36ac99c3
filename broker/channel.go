package broker

import (
	"fmt"
	"log/slog"
	"time"
)

// Channel is one subscription as handed to an adapter: names are final and
// every policy is resolved.
type Channel struct {
	// Name is the full channel name (stream, exchange, subject, topic).
	Name string
	// Group is the consumer group.
	Group string
	// ConsumerName is stable per node and channel; adapters that name
	// consumers use it.
	ConsumerName string
	// MaxInFlight bounds concurrently running handlers (>= 1).
	MaxInFlight int
	Retry       RetryPolicy
	DeadLetter  DeadLetterPolicy
	// Start is where a new group starts reading (FromDefault: the
	// adapter's own option or default). Adapters map it or refuse it with
	// an *UnsupportedError; it never changes an existing group.
	Start StartPosition
	// AdapterOptions holds typed per-channel options of the adapter's
	// package; an adapter refuses values of types it does not know
	// (kit.CheckOptions).
	AdapterOptions []any
	// Handler is the composed handler (interceptors already applied).
	Handler    Handler
	Serializer Serializer
	Logger     *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Observer, when set, sees how each delivery ended (metrics, tracing,
	// outcome hooks).
	Observer Observer
	// Limits are the broker's size limits: the x-error-* headers of retry
	// copies and dead letters are fitted into them. The plugin sets them
	// from a [Limiter] adapter; an adapter may set them in Subscribe.
	Limits Limits
}

// Validate checks a channel before an adapter subscribes it.
func (c *Channel) Validate() error {
	switch {
	case c.Name == "":
		return fmt.Errorf("%w: channel name is empty", ErrInvalidOption)
	case c.Group == "":
		return fmt.Errorf("%w: channel %q has no group", ErrInvalidOption, c.Name)
	case c.Handler == nil:
		return fmt.Errorf("%w: channel %q has no handler", ErrInvalidOption, c.Name)
	case c.MaxInFlight < 1:
		return fmt.Errorf("%w: channel %q: MaxInFlight must be >= 1", ErrInvalidOption, c.Name)
	case c.DeadLetter.Enabled && c.DeadLetter.Queue == "":
		return fmt.Errorf("%w: channel %q: dead-letter queue name is empty", ErrInvalidOption, c.Name)
	}
	if err := c.Retry.Validate(); err != nil {
		return fmt.Errorf("channel %q: %w", c.Name, err)
	}
	if err := c.Start.Validate(); err != nil {
		return fmt.Errorf("channel %q: %w", c.Name, err)
	}
	return nil
}

// Normalize fills nil Logger, Serializer and Now.
func (c *Channel) Normalize() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Serializer == nil {
		c.Serializer = JSON{}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Retry.Backoff == nil {
		c.Retry.Backoff = DefaultBackoff
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
}

const (
	// Ack acknowledges the message.
	Ack Action = iota
	// Retry redelivers the message after Outcome.Delay, to any member of the group.
	Retry
	// DeadLetter publishes a copy with Outcome.Headers to the dead-letter
	// queue, and acknowledges the original only once that publish is confirmed.
	DeadLetter
	// Drop acknowledges a message that failed for good; it has been logged.
	Drop
	// Release hands back a message that was not run, or whose run was cut
	// by our own stop: it is delivered again without using up an attempt.
	Release
)

func (a Action) String() string {
	switch a {
	case Ack:
		return "ack"
	case Retry:
		return "retry"
	case DeadLetter:
		return "dead-letter"
	case Drop:
		return "drop"
	case Release:
		return "release"
	}
	return fmt.Sprintf("Action(%d)", a)
}
