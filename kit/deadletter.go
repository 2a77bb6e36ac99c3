package kit

import (
	"github.com/microchannels/channels/broker"

	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// deadLetter publishes the dead-letter copy with headers fitted into the
// broker's limits. A copy that cannot fit is not sent (an AMQP broker
// closes the connection on an oversized frame): the refusal is
// ErrTooLarge. When the broker refuses the copy, it is tried once more with
// the library's own headers only, in case one of the producer's headers is
// what the broker refuses. refused reports a failure that counts as a
// refusal (not a transient one: see transient).
func deadLetter(ctx context.Context, c *broker.Channel, d *Delivery, headers map[string]string) (err error, refused bool) {
	payload := d.Msg.Payload
	h, ok := c.Limits.Fit(len(payload), headers)
	if ok {
		if err = d.Settle.DeadLetter(ctx, payload, h); err == nil || transient(err) {
			return err, false
		}
	} else {
		err = c.Limits.Check(len(payload), h)
	}
	min := broker.MinimalHeaders(headers)
	if c.Limits.Check(len(payload), min) != nil {
		return err, true // the payload alone is over the limits
	}
	err2 := d.Settle.DeadLetter(ctx, payload, min)
	if err2 != nil {
		return errors.Join(err, err2), !transient(err2)
	}
	c.Logger.Warn("channels: dead letter sent with the library's headers only: the broker refused the full copy",
		"channel", c.Name, "group", c.Group, "id", d.Msg.ID, "queue", c.DeadLetter.Queue, "refusal", err)
	return nil, false
}

// refusals is the count of dead-letter refusals in a failure record.
func refusals(failure map[string]string) int {
	n, err := strconv.Atoi(failure[broker.HeaderDeadLetterRefusals])
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// refusedForGood reports whether a kept failure has seen max refusals of
// its dead letter over at least window.
func refusedForGood(failure map[string]string, max int, window time.Duration, now time.Time) bool {
	if refusals(failure) < max {
		return false
	}
	since, err := strconv.ParseInt(failure[broker.HeaderDeadLetterRefusedSince], 10, 64)
	if err != nil {
		return true // a record without the time: the count alone
	}
	if window <= 0 {
		window = broker.DefaultRefusalWindow
	}
	return now.Sub(time.UnixMilli(since)) >= window
}

// withoutErrorHeaders is h without its x-error-* headers (a copy's new
// failure replaces them), for fitting: h itself when it has none.
func withoutErrorHeaders(h map[string]string) map[string]string {
	has := false
	for k := range h {
		if strings.HasPrefix(k, broker.HeaderErrorPrefix) {
			has = true
			break
		}
	}
	if !has {
		return h
	}
	out := make(map[string]string, len(h))
	for k, v := range h {
		if !strings.HasPrefix(k, broker.HeaderErrorPrefix) {
			out[k] = v
		}
	}
	return out
}

// transient reports whether a publish failed for lack of an answer (a
// deadline, a closed or refused connection, an error that says it is
// temporary or a timeout) rather than by a refusal of the copy itself: a
// transient failure is tried again on the next delivery without counting
// as a refusal. A refusal is counted, and the drop still waits
// DeadLetterPolicy.RefusalWindow, so an outage the classification misses costs
// no message within that window.
func transient(err error) bool {
	if errors.Is(err, broker.ErrTooLarge) {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errors.Is(err, broker.ErrNotConnected) || errors.Is(err, broker.ErrClosed) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) {
		return true
	}
	var tmp interface{ Temporary() bool }
	if errors.As(err, &tmp) && tmp.Temporary() {
		return true
	}
	var to interface{ Timeout() bool }
	if errors.As(err, &to) && to.Timeout() {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op)
}
