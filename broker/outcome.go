package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
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

// Decide returns the outcome of a delivery that ended with err.
func (c *Channel) Decide(msg *Message, err error) Outcome {
	if err == nil {
		return Outcome{Action: Ack}
	}
	attempt := msg.Attempt
	if attempt < 1 {
		attempt = 1
	}
	if !IsPoison(err) && attempt <= c.Retry.MaxRetries {
		c.Logger.Warn("channels: handler failed, will retry",
			"channel", c.Name, "group", c.Group, "id", msg.ID, "attempt", attempt, "error", err)
		return Outcome{Action: Retry, Delay: c.Retry.Backoff.Delay(attempt), Err: err}
	}
	return c.GiveUp(msg, err)
}

// GiveUp returns the final outcome for a message that will not be retried:
// DeadLetter when enabled, else Drop (logged at error level).
func (c *Channel) GiveUp(msg *Message, err error) Outcome {
	if c.DeadLetter.Enabled {
		return Outcome{Action: DeadLetter, Err: err, Headers: DeadLetterHeaders(msg, err, c.Now())}
	}
	c.Logger.Error("channels: message dropped after its last attempt (dead-lettering disabled)",
		"channel", c.Name, "group", c.Group, "id", msg.ID, "attempt", msg.Attempt, "error", err)
	return Outcome{Action: Drop, Err: err}
}

// Poison returns the outcome for a delivery that could not even be decoded
// (headers or envelope): no retries.
func (c *Channel) Poison(msg *Message, field string, cause error) Outcome {
	err := &DecodeError{Channel: c.Name, MsgID: msg.ID, Field: field, Err: cause}
	c.Logger.Error("channels: poison message", "channel", c.Name, "group", c.Group, "id", msg.ID, "error", err)
	return c.GiveUp(msg, err)
}

func (c *Channel) call(ctx context.Context, msg *Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = NewPanicError(r)
		}
	}()
	return c.Handler(ctx, msg)
}
