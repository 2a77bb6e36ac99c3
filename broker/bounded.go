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

// BoundedGrace is how long past its context's deadline [Bounded] waits for
// a step that watches the context itself to return its own error (a
// drain's names the handlers still running).
const BoundedGrace = 100 * time.Millisecond

// Bounded runs f and returns its error, or an *AbandonedError once ctx has
// ended and BoundedGrace past its deadline has gone by (a step called with
// a context that has already ended gets what is left of that grace, and at
// least a few milliseconds). It is for the driver calls of a stop, a close
// or a send that take no context (closing an AMQP channel, a client's
// Close, a flush): a wait the caller bounded is never much longer than its
// deadline. f runs on a goroutine of its own and must not touch anything
// the caller frees after Bounded returns; it runs to its end whatever
// happens.
func Bounded(ctx context.Context, what string, f func() error) error {
	return BoundedWithin(ctx, BoundedGrace, what, f)
}

// BoundedWithin is [Bounded] with a grace of its own.
func BoundedWithin(ctx context.Context, grace time.Duration, what string, f func() error) error {
	result := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		result <- f()
	}()
	select {
	case err := <-result:
		return err
	case <-ctx.Done():
	}
	limit := time.Now().Add(grace)
	if dl, ok := ctx.Deadline(); ok {
		limit = dl.Add(grace)
	}
	wait := time.Until(limit)
	if wait < 5*time.Millisecond {
		wait = 5 * time.Millisecond
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case err := <-result:
		return err
	case <-t.C:
		return &AbandonedError{What: what, Err: ctx.Err(), Done: done}
	}
}
