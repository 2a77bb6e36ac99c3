package broker

import (
	"fmt"
	"time"
)

// StartFrom says where a new consumer group starts reading its channel.
type StartFrom uint8

const (
	// FromDefault (the zero value) leaves the start to the adapter: its own
	// option if one is set (redis StartID, jetstream DeliverPolicy, kafka
	// FromBeginning), else its default, the newest messages.
	FromDefault StartFrom = iota
	// FromNewest: a new group sees the messages sent after it was created.
	FromNewest
	// FromOldest: a new group sees every message the broker still holds for
	// the channel.
	FromOldest
	// FromTime: a new group sees the messages the broker stored at or after
	// StartPosition.Time.
	FromTime
)

// StartPosition is where a new consumer group starts reading its channel:
// a portable declaration (Channel.Start) that every adapter either maps to
// its broker or refuses at Subscribe (and at Register, through
// ChannelChecker) with an *UnsupportedError. A group that already exists
// keeps its position whatever it says. The zero value is FromDefault.
type StartPosition struct {
	From StartFrom
	// Time is the instant of FromTime.
	Time time.Time
}

var (
	// StartNewest starts a new group with the messages sent after it was
	// created (what every adapter does by default).
	StartNewest = StartPosition{From: FromNewest}
	// StartOldest starts a new group with the oldest message the broker
	// holds for the channel.
	StartOldest = StartPosition{From: FromOldest}
)

// StartAt starts a new group with the messages stored at or after t (in
// the broker's clock: Redis entry ids, JetStream and Kafka timestamps).
func StartAt(t time.Time) StartPosition { return StartPosition{From: FromTime, Time: t} }

// IsSet reports whether the position was declared (not FromDefault).
func (p StartPosition) IsSet() bool { return p.From != FromDefault }

// Validate refuses an unknown From and a FromTime without a time.
func (p StartPosition) Validate() error {
	switch {
	case p.From > FromTime:
		return fmt.Errorf("%w: unknown start position %d", ErrInvalidOption, p.From)
	case p.From == FromTime && p.Time.IsZero():
		return fmt.Errorf("%w: StartAt needs a time", ErrInvalidOption)
	}
	return nil
}

func (p StartPosition) String() string {
	switch p.From {
	case FromDefault:
		return "default"
	case FromNewest:
		return "newest"
	case FromOldest:
		return "oldest"
	case FromTime:
		return "at " + p.Time.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprintf("StartPosition(%d)", p.From)
}

// UnsupportedError is a portable declaration (a start position, a send
// option) that an adapter cannot honour on its broker. It wraps both
// ErrUnsupported and ErrInvalidOption: it is a declaration to change.
type UnsupportedError struct {
	// Adapter is the adapter's type name ("AMQP").
	Adapter string
	// Channel is the channel concerned.
	Channel string
	// Setting is what was declared ("start position oldest").
	Setting string
	// Reason says why the broker cannot honour it.
	Reason string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("channels: %s adapter%s: %s is not supported: %s", e.Adapter, onChannel(e.Channel), e.Setting, e.Reason)
}

func onChannel(ch string) string {
	if ch == "" {
		return ""
	}
	return fmt.Sprintf(", channel %q", ch)
}

// Unwrap returns ErrUnsupported and ErrInvalidOption.
func (e *UnsupportedError) Unwrap() []error { return []error{ErrUnsupported, ErrInvalidOption} }

// ConflictError is a portable declaration contradicted by an adapter
// option given explicitly for the same channel or send (Channel.Start
// StartOldest and redis.ChannelOptions{StartID: "$"}; WithKey and another
// kafka.SendOptions.Key). It wraps ErrInvalidOption.
type ConflictError struct {
	Adapter, Channel string
	// Portable is the portable declaration, Specific the adapter option.
	Portable, Specific string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("channels: %s adapter%s: %s conflicts with %s: give one of them", e.Adapter, onChannel(e.Channel), e.Portable, e.Specific)
}

// Unwrap returns ErrInvalidOption.
func (e *ConflictError) Unwrap() error { return ErrInvalidOption }
