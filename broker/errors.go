package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"time"
)

var (
	// ErrInvalidOption is wrapped by every configuration error.
	ErrInvalidOption = errors.New("channels: invalid option")
	// ErrUnknownAdapter is returned when an adapter URL scheme or type name is not registered.
	ErrUnknownAdapter = errors.New("channels: unknown adapter")
	// ErrNotConnected is returned when publishing or subscribing before Connect succeeded.
	ErrNotConnected = errors.New("channels: adapter not connected")
	// ErrClosed is returned when publishing or subscribing after Close.
	ErrClosed = errors.New("channels: adapter closed")
	// ErrPublish wraps broker-side publish failures (refused, not confirmed, timed out).
	ErrPublish = errors.New("channels: publish failed")
	// ErrEncode is wrapped by payloads or headers that cannot be serialized.
	ErrEncode = errors.New("channels: cannot encode message")
	// ErrDecode is wrapped by payloads or headers that cannot be deserialized.
	// A handler error that wraps ErrDecode marks the message as poison: it is
	// not retried and goes straight to the dead-letter queue (or is dropped).
	ErrDecode = errors.New("channels: cannot decode message")
	// ErrPermanent marks a handler error that must not be retried.
	ErrPermanent = errors.New("channels: permanent failure")
	// ErrUnsupported is returned for an operation an adapter cannot perform.
	ErrUnsupported = errors.New("channels: unsupported by this adapter")
	// ErrNotFound is returned by operations tooling for a message or channel
	// the broker does not hold.
	ErrNotFound = errors.New("channels: not found")
	// ErrMaxAttemptsExceeded is the dead-letter cause of a message found with
	// more deliveries than its policy allows (for example after a consumer
	// crashed during the last attempt).
	ErrMaxAttemptsExceeded = errors.New("channels: message exceeded its delivery attempts")
	// ErrMaxDeliveries is the dead-letter cause of a message delivered more
	// times than RetryPolicy.MaxDeliveries without a result: its runs never
	// ended, for example because it crashes the consumer (a poison pill).
	ErrMaxDeliveries = errors.New("channels: message exceeded its deliveries (its runs never ended)")
	// ErrDeadLetterRefused is the cause of a message dropped because the
	// broker refused its dead-letter copy on every delivery up to
	// RetryPolicy.MaxDeliveries (a copy over the size limit, a target that
	// rejects it); the drop is logged at error level with the refusal.
	ErrDeadLetterRefused = errors.New("channels: gave up: dead letter refused")
	// ErrDrainTimeout is returned by Drain when the context ends before in-flight handlers finished.
	ErrDrainTimeout = errors.New("channels: drain timed out with handlers still running")
)

// DecodeError reports a payload or header that could not be decoded.
type DecodeError struct {
	Channel string
	MsgID   string
	Field   string // "payload", "headers", or a header name
	Err     error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("channels: cannot decode %s of message %q on %q: %v", e.Field, e.MsgID, e.Channel, e.Err)
}

// Unwrap returns both ErrDecode and the cause.
func (e *DecodeError) Unwrap() []error { return []error{ErrDecode, e.Err} }

// EncodeError reports a payload or header that could not be serialized.
type EncodeError struct {
	Channel string
	Err     error
}

func (e *EncodeError) Error() string {
	return fmt.Sprintf("channels: cannot encode message for %q: %v", e.Channel, e.Err)
}

// Unwrap returns both ErrEncode and the cause.
func (e *EncodeError) Unwrap() []error { return []error{ErrEncode, e.Err} }

// PanicError is what a handler panic becomes.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("channels: handler panic: %v", e.Value) }

// Unwrap returns the panic value when it is an error.
func (e *PanicError) Unwrap() error {
	if err, ok := e.Value.(error); ok {
		return err
	}
	return nil
}

// NewPanicError captures the current stack; call it from a deferred recover.
func NewPanicError(v any) *PanicError { return &PanicError{Value: v, Stack: debug.Stack()} }

// HandlerError is what a failed delivery reports in logs and to observers.
type HandlerError struct {
	Channel string
	Group   string
	MsgID   string
	Attempt int
	Err     error
}

func (e *HandlerError) Error() string {
	return fmt.Sprintf("channels: handler for %q (group %q) failed on message %q attempt %d: %v",
		e.Channel, e.Group, e.MsgID, e.Attempt, e.Err)
}

// Unwrap returns the handler's error.
func (e *HandlerError) Unwrap() error { return e.Err }

type permanentError struct{ err error }

func (e *permanentError) Error() string   { return e.err.Error() }
func (e *permanentError) Unwrap() []error { return []error{ErrPermanent, e.err} }

// Permanent marks err as not retryable: the message skips its remaining
// retries and is dead-lettered (or dropped) at once. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// PublishError wraps a broker-side publish failure with the channel it was for.
type PublishError struct {
	Channel string
	Err     error
}

func (e *PublishError) Error() string {
	return fmt.Sprintf("channels: publish to %q failed: %v", e.Channel, e.Err)
}

// Unwrap returns ErrPublish and the cause, so errors.Is works for both.
func (e *PublishError) Unwrap() []error { return []error{ErrPublish, e.Err} }

// BatchError reports a batch send in which at least one message was not
// sent. Errors holds one entry per message of the batch, in order: nil for a
// message the broker accepted, else that message's error, of the kinds a
// single send returns (*EncodeError, *PublishError, ErrNotConnected, ...).
// errors.Is and errors.As look through every message's error.
type BatchError struct {
	// Channel is the channel the batch was sent to, as the caller named it.
	Channel string
	// Errors has one entry per message; nil means sent.
	Errors []error
}

// NewBatchError returns nil when every entry of errs is nil, else a
// *BatchError holding errs.
func NewBatchError(channel string, errs []error) error {
	if BatchErrors(errs) == nil {
		return nil
	}
	return &BatchError{Channel: channel, Errors: errs}
}

// Failed returns the indexes of the messages that were not sent, in order.
func (e *BatchError) Failed() []int {
	var out []int
	for i, err := range e.Errors {
		if err != nil {
			out = append(out, i)
		}
	}
	return out
}

// Sent returns how many messages of the batch the broker accepted.
func (e *BatchError) Sent() int {
	n := 0
	for _, err := range e.Errors {
		if err == nil {
			n++
		}
	}
	return n
}

// Err returns the error of message i (nil: sent, or i out of range).
func (e *BatchError) Err(i int) error {
	if i < 0 || i >= len(e.Errors) {
		return nil
	}
	return e.Errors[i]
}

func (e *BatchError) Error() string {
	failed := e.Failed()
	if len(failed) == 0 {
		return fmt.Sprintf("channels: batch to %q: every message was sent", e.Channel)
	}
	s := fmt.Sprintf("channels: %d of %d messages to %q not sent; message %d: %v",
		len(failed), len(e.Errors), e.Channel, failed[0], e.Errors[failed[0]])
	if len(failed) > 1 {
		s += fmt.Sprintf(" (and %d more)", len(failed)-1)
	}
	return s
}

// Unwrap returns the error of every message that was not sent.
func (e *BatchError) Unwrap() []error {
	out := make([]error, 0, len(e.Errors))
	for _, err := range e.Errors {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

// DrainError is returned by a drain whose context ended with handlers still
// running. Their context has been cancelled; their messages are delivered
// again (released, or redelivered by the broker), never lost or
// dead-lettered for it.
type DrainError struct {
	Channel string
	Group   string
	// Running holds the ids of the messages whose handlers were still running.
	Running []string
}

func (e *DrainError) Error() string {
	const show = 10
	ids := e.Running
	more := ""
	if len(ids) > show {
		more = fmt.Sprintf(" and %d more", len(ids)-show)
		ids = ids[:show]
	}
	return fmt.Sprintf("channels: drain of %q (group %q) timed out with %d handler(s) still running (messages %s%s); they will be delivered again",
		e.Channel, e.Group, len(e.Running), strings.Join(ids, ", "), more)
}

// Unwrap returns ErrDrainTimeout.
func (e *DrainError) Unwrap() error { return ErrDrainTimeout }

// ErrAbandoned is wrapped by the error of a step that was still running when
// its context ended and was left to finish on its own (see kit.Bounded).
var ErrAbandoned = errors.New("channels: abandoned at the deadline")

// AbandonedError names a step that did not end by its context's deadline.
// The step goes on in the background until the driver call returns (a
// frozen link: until the operating system gives up on the connection); its
// result is discarded. Done is closed when it has returned.
type AbandonedError struct {
	// What names the step ("close the connection", "final commit").
	What string
	// Err is the context's error.
	Err error
	// Done is closed once the step has returned.
	Done <-chan struct{}
}

func (e *AbandonedError) Error() string {
	return fmt.Sprintf("channels: %s did not end by the deadline (%v); left running in the background", e.What, e.Err)
}

// Unwrap returns ErrAbandoned and the context's error.
func (e *AbandonedError) Unwrap() []error { return []error{ErrAbandoned, e.Err} }

// ErrTooLarge is wrapped by the error of a message over its broker's [Limits].
var ErrTooLarge = errors.New("channels: message over the broker's size limit")

// RemoteError is an error rebuilt from x-error-* headers, as read from a
// dead-letter queue.
type RemoteError struct {
	Message   string
	Name      string
	Code      string
	Type      string
	Stack     string
	Data      json.RawMessage // valid JSON, or nil
	Retryable *bool
	Timestamp time.Time
}

func (e *RemoteError) Error() string { return e.Message }

// Redacted wraps err so that its text has credentials hidden ([Redact]),
// while errors.Is and errors.As still see err and its chain. Nil stays nil.
func Redacted(err error) error {
	if err == nil {
		return nil
	}
	return redactedError{err}
}

type redactedError struct{ err error }

func (e redactedError) Error() string { return Redact(e.err.Error()) }
func (e redactedError) Unwrap() error { return e.err }
