package kit

import (
	"github.com/microchannels/channels/broker"

	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// DefaultSettleTimeout bounds each settling call (ack, retry hand-back,
// dead-letter publish, release) made by [Deliver].
const DefaultSettleTimeout = 10 * time.Second

// Settler is what an adapter can do with one delivery. [Deliver]
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
	Msg *broker.Message
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
func Admit(c *broker.Channel, d *Delivery) (broker.Outcome, bool) {
	msg := d.Msg
	switch {
	case d.Final && refusedForGood(d.Failure, c.Retry.DeliveryLimit(), c.DeadLetter.RefusalWindow, c.Now()):
		cause := broker.ErrDeadLetterRefused
		if re := broker.ErrorFromHeaders(d.Failure); re != nil {
			cause = fmt.Errorf("%w (%d refusals; the handler failed with: %s)", broker.ErrDeadLetterRefused, refusals(d.Failure), re.Message)
		}
		c.Logger.Error("channels: message dropped: the broker refused its dead-letter copy on every delivery",
			"channel", c.Name, "group", c.Group, "id", msg.ID, "queue", c.DeadLetter.Queue,
			"refusals", refusals(d.Failure), "refusal", d.Failure[broker.HeaderDeadLetterRefusal], "error", cause)
		return broker.Outcome{Action: broker.Drop, Err: cause}, false
	case d.Final:
		return giveUpKept(c, msg, broker.ErrMaxAttemptsExceeded, d.Failure), false
	case d.DecodeErr != nil:
		return Poison(c, msg, d.DecodeField, d.DecodeErr), false
	case msg.Attempt > c.Retry.MaxRetries+1:
		return giveUpKept(c, msg, broker.ErrMaxAttemptsExceeded, d.Failure), false
	case d.Deliveries > 0 && d.Deliveries > c.Retry.DeliveryLimit():
		c.Logger.Error("channels: message delivered too many times without a result (it may crash its consumers)",
			"channel", c.Name, "group", c.Group, "id", msg.ID, "deliveries", d.Deliveries)
		return giveUpKept(c, msg, broker.ErrMaxDeliveries, d.Failure), false
	}
	return broker.Outcome{}, true
}

// giveUpKept gives up with cause, using the x-error-* headers of the
// recorded failure when there is one.
func giveUpKept(c *broker.Channel, msg *broker.Message, cause error, kept map[string]string) broker.Outcome {
	if len(kept) > 0 {
		if re := broker.ErrorFromHeaders(kept); re != nil {
			cause = re
		}
	}
	out := GiveUp(c, msg, cause)
	if out.Action == broker.DeadLetter && len(kept) > 0 {
		for k := range out.Headers {
			if strings.HasPrefix(k, broker.HeaderErrorPrefix) {
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
func Deliver(ctx context.Context, c *broker.Channel, d *Delivery) broker.Outcome {
	msg := d.Msg
	if msg.Serializer() == nil {
		msg.SetSerializer(c.Serializer)
	}
	out, run := Admit(c, d)
	var took time.Duration
	if run {
		// The run's own context ends as soon as its outcome is decided, as
		// a request's does when its handler returns: work the handler
		// started with it (a goroutine, a call it did not wait for) learns
		// that the message is done.
		rctx := newRunCtx(ctx)
		start := time.Now()
		err := call(rctx, c, msg)
		took = time.Since(start)
		if err != nil && ctx.Err() != nil {
			out = broker.Outcome{Action: broker.Release, Err: err}
		} else {
			out = Decide(c, msg, err)
		}
		rctx.end(context.Canceled)
	}
	settleErr := Settle(c, d, out)
	if c.Observer != nil {
		c.Observer(ctx, broker.Event{Channel: c, Msg: msg, Outcome: out, Ran: run, Took: took,
			Deliveries: d.Deliveries, SettleErr: settleErr})
	}
	return out
}

// Settle carries out out for d with a context of its own (the handler
// context may be cancelled by then). Ack, the hot path, gets an unbounded
// context: adapters queue acknowledgements or bound their own I/O. The
// other actions are bounded by DefaultSettleTimeout.
func Settle(c *broker.Channel, d *Delivery, out broker.Outcome) (err error) {
	msg := d.Msg
	what := out.Action.String()
	if out.Action == broker.Ack || out.Action == broker.Drop {
		if err = d.Settle.Ack(context.Background()); err != nil {
			c.Logger.Warn("channels: acknowledging a message failed; the broker will deliver it again",
				"channel", c.Name, "group", c.Group, "id", msg.ID, "action", what, "error", err)
		}
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultSettleTimeout)
	defer cancel()
	switch out.Action {
	case broker.Retry:
		failure := broker.ErrorToHeaders(out.Err, c.Now())
		if fitted, ok := c.Limits.FitWith(len(msg.Payload), withoutErrorHeaders(msg.Headers), failure); ok {
			failure = fitted
		} else {
			failure = broker.MinimalHeaders(failure) // the message's own headers leave no room for more
		}
		err = d.Settle.Retry(ctx, out.Delay, failure)
	case broker.Release:
		err = d.Settle.Release(ctx)
	case broker.DeadLetter:
		if dlErr, refused := deadLetter(ctx, c, d, out.Headers); dlErr != nil {
			failure := map[string]string{}
			for k, v := range out.Headers {
				if strings.HasPrefix(k, broker.HeaderErrorPrefix) {
					failure[k] = v
				}
			}
			delete(failure, broker.HeaderErrorStack) // kept small: it is stored with the message
			n := refusals(d.Failure)
			since := d.Failure[broker.HeaderDeadLetterRefusedSince]
			if refused {
				n++
				if since == "" {
					since = strconv.FormatInt(c.Now().UnixMilli(), 10)
				}
			}
			failure[broker.HeaderDeadLetterRefusals] = strconv.Itoa(n)
			if since != "" {
				failure[broker.HeaderDeadLetterRefusedSince] = since
			}
			failure[broker.HeaderDeadLetterRefusal] = broker.ShortEscaped(dlErr.Error())
			if fitted, ok := c.Limits.FitWith(len(msg.Payload), withoutErrorHeaders(msg.Headers), failure); ok {
				failure = fitted
			} else {
				min := broker.MinimalHeaders(failure)
				for _, k := range []string{broker.HeaderDeadLetterRefusals, broker.HeaderDeadLetterRefusedSince, broker.HeaderDeadLetterRefusal} {
					if v, ok := failure[k]; ok {
						min[k] = v
					}
				}
				failure = min
			}
			c.Logger.Error("channels: dead-letter publish failed; the message stays pending and is dead-lettered again later",
				"channel", c.Name, "group", c.Group, "id", msg.ID, "queue", c.DeadLetter.Queue,
				"refusals", n, "max", c.Retry.DeliveryLimit(), "counted", refused, "error", dlErr)
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

// Decide returns the outcome of a delivery that ended with err.
func Decide(c *broker.Channel, msg *broker.Message, err error) broker.Outcome {
	if err == nil {
		return broker.Outcome{Action: broker.Ack}
	}
	attempt := msg.Attempt
	if attempt < 1 {
		attempt = 1
	}
	if !broker.IsPoison(err) && attempt <= c.Retry.MaxRetries {
		c.Logger.Warn("channels: handler failed, will retry",
			"channel", c.Name, "group", c.Group, "id", msg.ID, "attempt", attempt, "error", err)
		return broker.Outcome{Action: broker.Retry, Delay: c.Retry.Backoff.Delay(attempt), Err: err}
	}
	return GiveUp(c, msg, err)
}

// GiveUp returns the final outcome for a message that will not be retried:
// DeadLetter when enabled, else Drop (logged at error level).
func GiveUp(c *broker.Channel, msg *broker.Message, err error) broker.Outcome {
	if c.DeadLetter.Enabled {
		return broker.Outcome{Action: broker.DeadLetter, Err: err, Headers: broker.DeadLetterHeaders(msg, err, c.Now())}
	}
	c.Logger.Error("channels: message dropped after its last attempt (dead-lettering disabled)",
		"channel", c.Name, "group", c.Group, "id", msg.ID, "attempt", msg.Attempt, "error", err)
	return broker.Outcome{Action: broker.Drop, Err: err}
}

// Poison returns the outcome for a delivery that could not even be decoded
// (headers or envelope): no retries.
func Poison(c *broker.Channel, msg *broker.Message, field string, cause error) broker.Outcome {
	err := &broker.DecodeError{Channel: c.Name, MsgID: msg.ID, Field: field, Err: cause}
	c.Logger.Error("channels: poison message", "channel", c.Name, "group", c.Group, "id", msg.ID, "error", err)
	return GiveUp(c, msg, err)
}

func call(ctx context.Context, c *broker.Channel, msg *broker.Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = broker.NewPanicError(r)
		}
	}()
	return c.Handler(ctx, msg)
}
