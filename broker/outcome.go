package broker

import (
	"context"
	"errors"
	"time"
)

// Action is what an adapter must do with a delivery.
type Action uint8

// Outcome is the decision for one delivery.
type Outcome struct {
	Action Action
	// Delay before redelivery (Retry).
	Delay time.Duration
	// Err is the handler or decode error (nil for Ack).
	Err error
	// Headers of the dead-letter copy (DeadLetter).
	Headers map[string]string
}

// IsPoison reports whether err marks a message that will never succeed:
// a decode error, a Permanent error, or an error whose Retryable() is false.
func IsPoison(err error) bool {
	if errors.Is(err, ErrDecode) || errors.Is(err, ErrPermanent) {
		return true
	}
	var r Retryabler
	return errors.As(err, &r) && !r.Retryable()
}

// Event tells an [Observer] how one delivery ended.
type Event struct {
	Channel *Channel
	Msg     *Message
	// Outcome is what was carried out: Ack, Retry (with Delay), DeadLetter,
	// Drop or Release (handed back unrun or cut by a stop).
	Outcome Outcome
	// Ran reports whether the handler ran (false: given up or poison without
	// running).
	Ran bool
	// Took is the handler's run time.
	Took time.Duration
	// Deliveries is the broker's delivery count (0: unknown); more than
	// Msg.Attempt means earlier deliveries never ended (a crash).
	Deliveries int
	// SettleErr is the error of carrying out the outcome (the broker will
	// deliver the message again), or nil. For a DeadLetter whose publish
	// failed it wraps that failure, and the message was kept.
	SettleErr error
}

// Observer sees each delivery once it is settled. It observes and cannot
// change the outcome; it runs on the handler's goroutine, so it must be
// quick. Set on Channel.Observer.
type Observer func(ctx context.Context, e Event)

// Headers of the failure record of a message whose dead-letter copy the
// broker refused (kept with the x-error-* headers by Settler.Keep): how
// many deliveries saw a refusal, the last refusal's text, and when the
// first refusal came (Unix milliseconds).
const (
	HeaderDeadLetterRefusals     = "x-error-dead-letter-refusals"
	HeaderDeadLetterRefusal      = "x-error-dead-letter-refusal"
	HeaderDeadLetterRefusedSince = "x-error-dead-letter-refused-since"
)
