package broker

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DeadLetterPolicy is a channel's resolved dead-letter configuration.
type DeadLetterPolicy struct {
	Enabled bool
	// Queue is the full (prefixed) dead-letter channel name.
	Queue string
	// Exchange is the full (prefixed) AMQP dead-letter exchange name.
	Exchange string
	// RefusalWindow is the least time between a message's first refused
	// dead letter and its drop (0: DefaultRefusalWindow).
	RefusalWindow time.Duration
}

// DefaultRefusalWindow is the default DeadLetterPolicy.RefusalWindow: a
// dead-letter target that is only unavailable for a while (a node
// restarting, a leader election) is not mistaken for one that refuses the
// copy.
const DefaultRefusalWindow = 30 * time.Second

// DeadLetterHeaders builds the headers of a dead-lettered copy: the original
// headers, x-original-channel, x-original-group, x-original-id,
// x-redelivered-count (redeliveries so far) and the x-error-* headers. A
// header named by a *DecodeError cause is moved to x-original-<name>.
func DeadLetterHeaders(msg *Message, cause error, now time.Time) map[string]string {
	eh := ErrorToHeaders(cause, now)
	h := CloneHeaders(msg.Headers, 5+len(eh))
	delete(h, HeaderGroup)
	for k := range h {
		if strings.HasPrefix(k, HeaderErrorPrefix) {
			delete(h, k)
		}
	}
	// A header that could not be decoded would poison the dead-letter
	// consumer too: keep its value under x-original-<name>.
	var de *DecodeError
	if errors.As(cause, &de) && de.Field != "payload" && de.Field != "headers" {
		if v, ok := h[de.Field]; ok {
			delete(h, de.Field)
			h["x-original-"+de.Field] = v
		}
	}
	h[HeaderOriginalChannel] = msg.Channel
	h[HeaderOriginalGroup] = msg.Group
	if msg.ID != "" {
		h[HeaderOriginalID] = msg.ID
	}
	redelivered := msg.Attempt - 1
	if redelivered < 0 {
		redelivered = 0
	}
	h[HeaderRedeliveredCount] = strconv.Itoa(redelivered)
	for k, v := range eh {
		h[k] = v
	}
	return h
}

// deadLetter publishes the dead-letter copy with headers fitted into the
// broker's limits. A copy that cannot fit is not sent (an AMQP broker
// closes the connection on an oversized frame): the refusal is
// ErrTooLarge. When the broker refuses the copy, it is tried once more with
// the library's own headers only, in case one of the producer's headers is
// what the broker refuses. refused reports a failure that counts as a
// refusal (not a transient one: see transient).
func (c *Channel) deadLetter(ctx context.Context, d *Delivery, headers map[string]string) (err error, refused bool) {
	payload := d.Msg.Payload
	h, ok := c.Limits.Fit(len(payload), headers)
	if ok {
		if err = d.Settle.DeadLetter(ctx, payload, h); err == nil || transient(err) {
			return err, false
		}
	} else {
		err = c.Limits.Check(len(payload), h)
	}
	min := minimalHeaders(headers)
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
	n, err := strconv.Atoi(failure[HeaderDeadLetterRefusals])
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
	since, err := strconv.ParseInt(failure[HeaderDeadLetterRefusedSince], 10, 64)
	if err != nil {
		return true // a record without the time: the count alone
	}
	if window <= 0 {
		window = DefaultRefusalWindow
	}
	return now.Sub(time.UnixMilli(since)) >= window
}

// withoutErrorHeaders is h without its x-error-* headers (a copy's new
// failure replaces them), for fitting: h itself when it has none.
func withoutErrorHeaders(h map[string]string) map[string]string {
	has := false
	for k := range h {
		if strings.HasPrefix(k, HeaderErrorPrefix) {
			has = true
			break
		}
	}
	if !has {
		return h
	}
	out := make(map[string]string, len(h))
	for k, v := range h {
		if !strings.HasPrefix(k, HeaderErrorPrefix) {
			out[k] = v
		}
	}
	return out
}

// minimalHeaders are the library's own headers of a copy (the original
// channel, group and id, the redelivery count and the error's name, code,
// time and a short message), for a copy the broker refused in full.
func minimalHeaders(h map[string]string) map[string]string {
	min := make(map[string]string, 10)
	for _, k := range []string{HeaderOriginalChannel, HeaderOriginalGroup, HeaderOriginalID, HeaderRedeliveredCount,
		HeaderErrorName, HeaderErrorCode, HeaderErrorTimestamp, HeaderErrorRetryable} {
		if v, ok := h[k]; ok {
			min[k] = cutEscaped(v, minErrorMessage)
		}
	}
	min[HeaderErrorMessage] = cutEscaped(h[HeaderErrorMessage], minErrorMessage) // escaped already
	min[HeaderErrorTrimmed] = "headers"
	return min
}

// transient reports whether a publish failed for lack of an answer (a
// deadline, a closed or refused connection, an error that says it is
// temporary or a timeout) rather than by a refusal of the copy itself: a
// transient failure is tried again on the next delivery without counting
// as a refusal. A refusal is counted, and the drop still waits
// DeadLetterPolicy.RefusalWindow, so an outage the classification misses costs
// no message within that window.
func transient(err error) bool {
	if errors.Is(err, ErrTooLarge) {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errors.Is(err, ErrNotConnected) || errors.Is(err, ErrClosed) || errors.Is(err, io.EOF) ||
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
