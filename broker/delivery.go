package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DefaultSettleTimeout bounds each settling call (ack, retry hand-back,
// dead-letter publish, release) made by [Channel.Deliver].
const DefaultSettleTimeout = 10 * time.Second

// DefaultExtraDeliveries is how many deliveries beyond MaxRetries+1 a
// message may get before it is treated as a poison pill: deliveries whose
// run never ended (the consumer crashed or was killed during it).
const DefaultExtraDeliveries = 5

// Settler is what an adapter can do with one delivery. [Channel.Deliver]
// calls exactly one of Ack, Retry, Release, or DeadLetter followed by Ack
// (confirmed) or Keep (failed).
type Settler interface {
	// Ack removes the message for good: handled, dropped, or dead-lettered
	// with a confirmed publish. It is the hot path: its ctx has no deadline,
	// so an adapter queues the acknowledgement or bounds its own I/O.
	Ack(ctx context.Context) error
	// Retry records a failed run (its x-error-* headers are in failure) and
	// hands the message back so that any member of the group gets it again
	// after delay, as attempt Attempt+1. Other messages are not blocked.
	Retry(ctx context.Context, delay time.Duration, failure map[string]string) error
	// DeadLetter publishes the dead-letter copy and returns once the broker
	// confirmed it. The original is acked only after it returned nil.
	DeadLetter(ctx context.Context, payload []byte, headers map[string]string) error
	// Keep leaves the message pending after a failed dead-letter publish and
	// records its final failure (x-error-* headers), so that its next
	// delivery carries [Delivery.Final] and is dead-lettered without running.
	Keep(ctx context.Context, failure map[string]string) error
	// Release hands back a message that was fetched but not run, or whose run
	// was cut by our own stop: it is delivered again without using up an
	// attempt (and, where the broker counts deliveries, with that delivery
	// undone).
	Release(ctx context.Context) error
}

// Delivery is one message fetched by an adapter, with what the broker knows
// about its past.
type Delivery struct {
	// Msg is the decoded message. Msg.Attempt is 1 + the number of failed
	// runs recorded for it (not the number of deliveries).
	Msg *Message
	// Deliveries counts the times the broker handed the message out, this
	// one included; 0 when the broker does not say. Deliveries beyond
	// Channel.Retry.MaxDeliveries make it a poison pill.
	Deliveries int
	// Final is set when an earlier run failed for good and its dead-letter
	// publish failed: the message is dead-lettered (or dropped) again without
	// running. Failure then holds the x-error-* headers of that run.
	Final bool
	// Failure holds the x-error-* headers recorded for the last failed run,
	// if the adapter keeps them; used when the message is given up without
	// running.
	Failure map[string]string
	// DecodeField and DecodeErr report an envelope or header that could not
	// be decoded: the message is poison.
	DecodeField string
	DecodeErr   error
	// Settle carries out the outcome.
	Settle Settler
}

// Admit decides whether a delivery may run. It returns false with the
// outcome to carry out when the message must be given up without running:
// a final failure kept from an earlier run, an undecodable envelope, a
// message over its attempt limit, or a poison pill over its delivery limit.
// This is the attempt rule of every adapter; adapters ask, the channel
// decides.
func (c *Channel) Admit(d *Delivery) (Outcome, bool) {
	msg := d.Msg
	switch {
	case d.Final && refusedForGood(d.Failure, c.Retry.maxDeliveries(), c.DeadLetter.RefusalWindow, c.Now()):
		cause := ErrDeadLetterRefused
		if re := ErrorFromHeaders(d.Failure); re != nil {
			cause = fmt.Errorf("%w (%d refusals; the handler failed with: %s)", ErrDeadLetterRefused, refusals(d.Failure), re.Message)
		}
		c.Logger.Error("channels: message dropped: the broker refused its dead-letter copy on every delivery",
			"channel", c.Name, "group", c.Group, "id", msg.ID, "queue", c.DeadLetter.Queue,
			"refusals", refusals(d.Failure), "refusal", d.Failure[HeaderDeadLetterRefusal], "error", cause)
		return Outcome{Action: Drop, Err: cause}, false
	case d.Final:
		return c.giveUpKept(msg, ErrMaxAttemptsExceeded, d.Failure), false
	case d.DecodeErr != nil:
		return c.Poison(msg, d.DecodeField, d.DecodeErr), false
	case msg.Attempt > c.Retry.MaxRetries+1:
		return c.giveUpKept(msg, ErrMaxAttemptsExceeded, d.Failure), false
	case d.Deliveries > 0 && d.Deliveries > c.Retry.maxDeliveries():
		c.Logger.Error("channels: message delivered too many times without a result (it may crash its consumers)",
			"channel", c.Name, "group", c.Group, "id", msg.ID, "deliveries", d.Deliveries)
		return c.giveUpKept(msg, ErrMaxDeliveries, d.Failure), false
	}
	return Outcome{}, true
}

// giveUpKept gives up with cause, using the x-error-* headers of the
// recorded failure when there is one.
func (c *Channel) giveUpKept(msg *Message, cause error, kept map[string]string) Outcome {
	if len(kept) > 0 {
		if re := ErrorFromHeaders(kept); re != nil {
			cause = re
		}
	}
	out := c.GiveUp(msg, cause)
	if out.Action == DeadLetter && len(kept) > 0 {
		for k := range out.Headers {
			if strings.HasPrefix(k, HeaderErrorPrefix) {
				delete(out.Headers, k)
			}
		}
		for k, v := range kept {
			out.Headers[k] = v
		}
	}
	return out
}

// Deliver runs one delivery end to end: it admits it (attempt and delivery
// limits), runs the handler on a context of its own derived from ctx and
// cancelled once the handler returned and its outcome is decided
// (recovering panics), decides the outcome
// and carries it out through d.Settle, logging what is not silent. ctx is
// the subscription's handler context: when it was cancelled by a stop whose
// deadline passed, a run that returned an error is released (delivered
// again, no attempt used), never retried, dead-lettered or dropped.
//
// It returns the outcome carried out (Action Release for a release).
func (c *Channel) Deliver(ctx context.Context, d *Delivery) Outcome {
	msg := d.Msg
	if msg.serializer == nil {
		msg.serializer = c.Serializer
	}
	out, run := c.Admit(d)
	var took time.Duration
	if run {
		// The run's own context ends as soon as its outcome is decided, as
		// a request's does when its handler returns: work the handler
		// started with it (a goroutine, a call it did not wait for) learns
		// that the message is done.
		rctx := newRunCtx(ctx)
		start := time.Now()
		err := c.call(rctx, msg)
		took = time.Since(start)
		if err != nil && ctx.Err() != nil {
			out = Outcome{Action: Release, Err: err}
		} else {
			out = c.Decide(msg, err)
		}
		rctx.end(context.Canceled)
	}
	settleErr := c.Settle(d, out)
	if c.Observer != nil {
		c.Observer(ctx, Event{Channel: c, Msg: msg, Outcome: out, Ran: run, Took: took,
			Deliveries: d.Deliveries, SettleErr: settleErr})
	}
	return out
}

// Headers of the failure record of a message whose dead-letter copy the
// broker refused (kept with the x-error-* headers by Settler.Keep): how
// many deliveries saw a refusal, the last refusal's text, and when the
// first refusal came (Unix milliseconds).
const (
	HeaderDeadLetterRefusals     = "x-error-dead-letter-refusals"
	HeaderDeadLetterRefusal      = "x-error-dead-letter-refusal"
	HeaderDeadLetterRefusedSince = "x-error-dead-letter-refused-since"
)

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

// Settle carries out out for d with a context of its own (the handler
// context may be cancelled by then). Ack, the hot path, gets an unbounded
// context: adapters queue acknowledgements or bound their own I/O. The
// other actions are bounded by DefaultSettleTimeout.
func (c *Channel) Settle(d *Delivery, out Outcome) (err error) {
	msg := d.Msg
	what := out.Action.String()
	if out.Action == Ack || out.Action == Drop {
		if err = d.Settle.Ack(context.Background()); err != nil {
			c.Logger.Warn("channels: acknowledging a message failed; the broker will deliver it again",
				"channel", c.Name, "group", c.Group, "id", msg.ID, "action", what, "error", err)
		}
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultSettleTimeout)
	defer cancel()
	switch out.Action {
	case Retry:
		failure := ErrorToHeaders(out.Err, c.Now())
		if fitted, ok := c.Limits.FitWith(len(msg.Payload), withoutErrorHeaders(msg.Headers), failure); ok {
			failure = fitted
		} else {
			failure = minimalHeaders(failure) // the message's own headers leave no room for more
		}
		err = d.Settle.Retry(ctx, out.Delay, failure)
	case Release:
		err = d.Settle.Release(ctx)
	case DeadLetter:
		if dlErr, refused := c.deadLetter(ctx, d, out.Headers); dlErr != nil {
			failure := map[string]string{}
			for k, v := range out.Headers {
				if strings.HasPrefix(k, HeaderErrorPrefix) {
					failure[k] = v
				}
			}
			delete(failure, HeaderErrorStack) // kept small: it is stored with the message
			n := refusals(d.Failure)
			since := d.Failure[HeaderDeadLetterRefusedSince]
			if refused {
				n++
				if since == "" {
					since = strconv.FormatInt(c.Now().UnixMilli(), 10)
				}
			}
			failure[HeaderDeadLetterRefusals] = strconv.Itoa(n)
			if since != "" {
				failure[HeaderDeadLetterRefusedSince] = since
			}
			failure[HeaderDeadLetterRefusal] = cutEscaped(EscapeLineBreaks(dlErr.Error()), minErrorMessage)
			if fitted, ok := c.Limits.FitWith(len(msg.Payload), withoutErrorHeaders(msg.Headers), failure); ok {
				failure = fitted
			} else {
				min := minimalHeaders(failure)
				for _, k := range []string{HeaderDeadLetterRefusals, HeaderDeadLetterRefusedSince, HeaderDeadLetterRefusal} {
					if v, ok := failure[k]; ok {
						min[k] = v
					}
				}
				failure = min
			}
			c.Logger.Error("channels: dead-letter publish failed; the message stays pending and is dead-lettered again later",
				"channel", c.Name, "group", c.Group, "id", msg.ID, "queue", c.DeadLetter.Queue,
				"refusals", n, "max", c.Retry.maxDeliveries(), "counted", refused, "error", dlErr)
			what, err = "keep", d.Settle.Keep(ctx, failure)
			defer func() { err = errors.Join(fmt.Errorf("dead-letter publish: %w", dlErr), err) }()
		} else {
			err = d.Settle.Ack(ctx)
		}
	}
	if err != nil {
		c.Logger.Warn("channels: settling a message failed; the broker will deliver it again",
			"channel", c.Name, "group", c.Group, "id", msg.ID, "action", what, "error", err)
	}
	return err
}
