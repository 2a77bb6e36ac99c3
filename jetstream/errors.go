package jetstream

import (
	"errors"
	"fmt"

	"github.com/microchannels/channels/broker"
)

var (
	// ErrUpdateNotAllowed is wrapped by a *ConfigError: the existing stream
	// or consumer differs from the options in a way that cannot be updated
	// (storage, retention, deliver policy, start position, ack policy, ...).
	// Delete it, or change the options back.
	ErrUpdateNotAllowed = errors.New("channels/jetstream: configuration change not allowed on an existing stream or consumer")
	// ErrPushConsumer is returned by Subscribe when the group's durable
	// consumer exists as a push consumer, as @moleculer/channels 0.1.x
	// creates them: a pull consumer cannot join it. Use another group name
	// (Go and Node services then consume the same stream in different
	// groups).
	// ErrHeaderRefused is wrapped by the *broker.PublishError of a send
	// whose headers NATS cannot carry as they are: a name that is empty or
	// holds a space, a colon or a control character, a value with CR or LF,
	// or the name Status on a message with an empty payload (NATS clients
	// take an empty message with a Status header for a status of the
	// server).
	ErrHeaderRefused = errors.New("channels/jetstream: header cannot be sent on NATS")
	ErrPushConsumer  = errors.New("channels/jetstream: the group's durable consumer is a push consumer (made by @moleculer/channels?); a pull consumer cannot join it: use another group")
)

// ConfigError reports a stream or consumer whose configuration cannot be
// brought to what the options ask.
type ConfigError struct {
	// Kind is "stream" or "consumer".
	Kind string
	// Name is the stream or consumer name.
	Name string
	// Field names what differs.
	Field string
	// Have and Want are the existing and the asked values.
	Have, Want any
	// Err is the server's refusal, when there was one.
	Err error
}

func (e *ConfigError) Error() string {
	s := fmt.Sprintf("channels/jetstream: %s %q: %s is %v, the options ask for %v; the server cannot update it",
		e.Kind, e.Name, e.Field, e.Have, e.Want)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns ErrUpdateNotAllowed and the server's error.
func (e *ConfigError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrUpdateNotAllowed, e.Err}
	}
	return []error{ErrUpdateNotAllowed}
}

// MaxDeliverError refuses a MaxDeliver too low for the channel's retry
// policy: the server would stop delivering a message (neither handled nor
// dead-lettered) before the kit gives it up, for example while the
// dead-letter queue refuses copies. It wraps broker.ErrInvalidOption.
type MaxDeliverError struct {
	Channel         string
	MaxDeliver, Min int
}

func (e *MaxDeliverError) Error() string {
	return fmt.Sprintf("channels/jetstream: channel %q: MaxDeliver %d is under %d (4 x the channel's MaxDeliveries: deliveries, dead-letter refusals and releases); use at least %d, or -1",
		e.Channel, e.MaxDeliver, e.Min, e.Min)
}

// Unwrap returns broker.ErrInvalidOption.
func (e *MaxDeliverError) Unwrap() error { return broker.ErrInvalidOption }
