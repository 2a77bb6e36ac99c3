package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	kafkago "github.com/segmentio/kafka-go"
)

// retriable tells the errors after which a produce request is tried
// again: the ones saying that nothing was written. An ambiguous error is
// not one of them.
func retriable(err error) bool {
	return !ambiguous(err) && (transient(err) || errors.Is(err, kafkago.NotEnoughReplicas))
}

// ErrWriteUnknown marks the error of a send whose produce request ended
// without telling whether its messages were written (a timeout after the
// request may have reached the leader): they may be in the topic. Such a
// send is not sent again by the adapter (a second copy would be a
// duplicate); the caller decides, knowing that sending again is
// at-least-once.
var ErrWriteUnknown = errors.New("channels/kafka: the outcome of the write is unknown: the message may have been written")

// ambiguous tells the errors of a produce request whose messages may have
// been written: the leader's replication timeout, a network timeout, or
// the connection ending while the answer was read (end of stream, reset or
// abort on a read: the request was sent and may have been processed). A
// connection that fails while the request is written (or dialled) is not
// ambiguous: the broker never had the whole request.
func ambiguous(err error) bool {
	var ne net.Error
	if errors.Is(err, kafkago.RequestTimedOut) || errors.As(err, &ne) && ne.Timeout() ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "read" && (errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNABORTED))
}

// outcome is the error reported for a write that failed with err:
// marked with ErrWriteUnknown when err is ambiguous.
func outcome(err error) error {
	if err != nil && ambiguous(err) && !errors.Is(err, ErrWriteUnknown) {
		return fmt.Errorf("%w: %w", ErrWriteUnknown, err)
	}
	return err
}
