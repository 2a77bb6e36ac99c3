package broker

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrAbandoned is wrapped by the error of a step that was still running when
// its context ended and was left to finish on its own (see [Bounded]).
var ErrAbandoned = errors.New("channels: abandoned at the deadline")

// AbandonedError names a step that did not end by its context's deadline.
// The step goes on in the background until the driver call returns (a
// frozen link: until the operating system gives up on the connection); its
// result is discarded.
type AbandonedError struct {
	// What names the step ("close the connection", "final commit").
	What string
	// Err is the context's error.
	Err error
}

func (e *AbandonedError) Error() string {
	return fmt.Sprintf("channels: %s did not end by the deadline (%v); left running in the background", e.What, e.Err)
}

// Unwrap returns ErrAbandoned and the context's error.
func (e *AbandonedError) Unwrap() []error { return []error{ErrAbandoned, e.Err} }

// Bounded runs f and returns its error, or an *AbandonedError once ctx
// ends first. It is for the driver calls of a stop, a close or a send that
// take no context (closing an AMQP channel, a client's Close, a flush): a
// wait the caller bounded must never be longer than its deadline. f runs on
// a goroutine of its own and must not touch anything the caller frees after
// Bounded returns.
func Bounded(ctx context.Context, what string, f func() error) error {
	if ctx.Err() != nil {
		// Still run it: the step releases resources and must happen, but
		// nobody waits for it.
		go func() { _ = f() }()
		return &AbandonedError{What: what, Err: ctx.Err()}
	}
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	// A step that watches ctx itself returns at the same moment, with an
	// error that says more (a drain names the handlers still running):
	// give it BoundedGrace to do so.
	t := time.NewTimer(BoundedGrace)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return &AbandonedError{What: what, Err: ctx.Err()}
	}
}

// BoundedGrace is how long [Bounded] waits past the deadline for a step
// that watches the context itself to return its own error.
const BoundedGrace = 100 * time.Millisecond
