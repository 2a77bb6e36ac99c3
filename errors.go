package channels

import (
	"errors"

	"github.com/microchannels/channels/broker"
)

// Errors of the plugin (the sentinels of package broker are re-exported in
// exports.go).
var (
	// ErrInvalidSchema is wrapped by malformed service schemas.
	ErrInvalidSchema = errors.New("channels: invalid service schema")
	// ErrNoHandler is wrapped when a declared channel has no handler.
	ErrNoHandler = errors.New("channels: channel has no handler")
	// ErrDuplicateProperty is returned when two plugins of one service claim
	// the same schema property, send method, adapter property or trigger name.
	ErrDuplicateProperty = errors.New("channels: schema property claimed by two plugins")
	// ErrUnknownChannel is returned by the local trigger for a channel the schema does not declare.
	ErrUnknownChannel = errors.New("channels: unknown channel")
	// ErrAlreadyStarted is returned when starting (or connecting) a started plugin.
	ErrAlreadyStarted = errors.New("channels: plugin already started")
)

func redactErr(err error) error { return broker.Redacted(err) }

// handlerError is a handler's error with its text, and the stack of a
// panic, redacted (broker.Redact): what goes into dead-letter headers
// (x-error-message, x-error-stack), failure records, span status and logs.
// errors.Is and errors.As see the original error, except that As of a
// *broker.PanicError gives a copy whose Stack is redacted.
type handlerError struct {
	err   error
	msg   string
	panic *broker.PanicError // the redacted copy, if the error holds a panic
}

func (e *handlerError) Error() string { return e.msg }
func (e *handlerError) Unwrap() error { return e.err }

func (e *handlerError) As(target any) bool {
	if pp, ok := target.(**broker.PanicError); ok && e.panic != nil {
		*pp = e.panic
		return true
	}
	return false
}

// redactHandlerErr returns err with credentials hidden from its text and
// from the stack of a panic it holds: err itself when there is nothing to
// hide (so that errors the handler returns keep their identity for
// observers), else a *handlerError.
func redactHandlerErr(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	red := broker.Redact(msg)
	var pc *broker.PanicError
	var pe *broker.PanicError
	if errors.As(err, &pe) && len(pe.Stack) > 0 {
		if stack := broker.Redact(string(pe.Stack)); stack != string(pe.Stack) {
			c := *pe
			c.Stack = []byte(stack)
			pc = &c
		}
	}
	if red == msg && pc == nil {
		return err
	}
	return &handlerError{err: err, msg: red, panic: pc}
}

// recoverHandler turns a panic of a handler into a *broker.PanicError,
// as the kit would, for the wrappers that must see it as an error (the
// handler span, the redaction of its stack).
func recoverHandler(errp *error) {
	if r := recover(); r != nil {
		*errp = broker.NewPanicError(r)
	}
}
