package amqp

import (
	"context"
	"errors"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels/broker"
)

// delivery carries out the kit's outcome for one message (the kit.Settler).
type delivery struct {
	s  *subscription
	d  *amqp091.Delivery
	k  *acker
	h  history
	id string
	// copied: its dead-letter copy is confirmed, and its ack goes out at once.
	copied bool
}

func (t *delivery) Ack(context.Context) error {
	if t.copied {
		return t.k.ackNow(t.d.DeliveryTag)
	}
	return t.k.ack(t.d.DeliveryTag)
}

// Retry publishes a copy with x-redelivered-count + 1, x-group and the
// failure's x-error-* headers to the retry queue of the delay (RabbitMQ
// dead-letters it back to the group queue when its TTL ends), confirmed,
// then acks the original.
func (t *delivery) Retry(ctx context.Context, delay time.Duration, failure map[string]string) error {
	h := t.copyHeaders(failure)
	h[broker.HeaderRedeliveredCount] = int32(t.h.failed + 1)
	return t.republish(ctx, delay, h)
}

// Keep publishes a copy marked final with the failure (same attempt) to
// the retry queue of DefaultKeepDelay, confirmed, then acks the original:
// the copy is dead-lettered again without running.
func (t *delivery) Keep(ctx context.Context, failure map[string]string) error {
	h := t.copyHeaders(failure)
	h[HeaderFinal] = true
	return t.republish(ctx, DefaultKeepDelay, h)
}

func (t *delivery) copyHeaders(failure map[string]string) amqp091.Table {
	h := copyTable(t.d.Headers, len(failure)+4)
	for k := range h {
		if len(k) > len(broker.HeaderErrorPrefix) && k[:len(broker.HeaderErrorPrefix)] == broker.HeaderErrorPrefix {
			delete(h, k)
		}
	}
	// The failure replaces the x-error-* headers of the last run: it is
	// fitted beside the others only (the kit counts the message's headers
	// as they arrived, the last failure's included).
	failure, _ = t.s.ch.Limits.FitWith(len(t.d.Body), fromTable(h), failure)
	for k, v := range failure {
		h[k] = v
	}
	h[broker.HeaderGroup] = t.s.ch.Group
	if t.h.unfinished > 0 {
		h[HeaderUnfinished] = int32(t.h.unfinished)
	}
	return h
}

func (t *delivery) republish(ctx context.Context, delay time.Duration, h amqp091.Table) error {
	s := t.s
	p := republishing(t.d, h)
	if p.MessageId == "" {
		p.MessageId = t.id
	}
	err := s.publishDelayed(ctx, delay, p)
	var cp *confirmPending
	switch {
	case errors.As(err, &cp):
		// Written while RabbitMQ blocked publishing: its confirm comes
		// once the alarm ends, and the original is acked then (a hand-back
		// now would run this attempt again beside the copy).
		s.awaitConfirm(t.d, t.k, cp.pend)
		return err
	case err != nil:
		s.handBackLater(t.d, t.k)
		return err
	}
	return t.k.ackNow(t.d.DeliveryTag)
}

// publishDelayed publishes p to the group queue after delay, through the
// retry queue of the delay (straight to the group queue without delay).
// Its error may be a *confirmPending (see publisher.settleKeep), whose
// confirm the caller must wait for or abandon.
func (s *subscription) publishDelayed(ctx context.Context, delay time.Duration, p amqp091.Publishing) error {
	if delay <= 0 {
		return s.l.pub.settleKeep(ctx, "", s.queue, p)
	}
	for try := 0; ; try++ {
		rq, err := s.l.topo.retryQueue(ctx, s.queue, delay, durable(s.opts.Queue.Durable), s.queueType())
		if err != nil {
			return err
		}
		err = s.l.pub.settleKeep(ctx, "", rq, p)
		var ret *ReturnedError
		if errors.As(err, &ret) && try == 0 {
			// The retry queue expired or was deleted: declare it again.
			s.l.topo.forgetRetryQueue(rq)
			continue
		}
		return err
	}
}

// DeadLetter publishes the dead-letter copy (mandatory, confirmed) to the
// fanout exchange named like the dead-letter queue: the queue itself is
// bound to it, and so is every group consuming the dead-letter queue as a
// channel.
func (t *delivery) DeadLetter(ctx context.Context, payload []byte, headers map[string]string) error {
	dl := t.s.ch.DeadLetter
	p := republishing(t.d, toTable(headers))
	p.Body = payload
	if p.MessageId == "" {
		p.MessageId = t.id
	}
	if p.DeliveryMode != amqp091.Persistent {
		p.DeliveryMode = amqp091.Persistent
	}
	err := t.s.l.pub.settle(ctx, dl.Queue, dl.Queue, p)
	if isCode(err, amqp091.NotFound) && !collateral(err, dl.Queue) {
		// The dead-letter exchange was deleted: declare the dead-letter
		// topology again and publish once more.
		if derr := t.s.l.topo.withChannel(ctx, func(ch *amqp091.Channel) error { return declareDeadLetter(ch, t.s) }); derr != nil {
			return errors.Join(err, derr)
		}
		err = t.s.l.pub.settle(ctx, dl.Queue, dl.Queue, p)
	}
	t.copied = err == nil
	return err
}

// Release hands the message back (see handBack): no attempt is used up
// (x-redelivered-count is unchanged) and no delivery is counted. It is
// bounded by ctx and, during a drain, by the time the drain's Finish waits
// for hand-backs (see releaseContext).
func (t *delivery) Release(ctx context.Context) error {
	s := t.s
	if !s.enter() {
		// The drain's Finish closes the channel: RabbitMQ requeues the
		// message (and counts that delivery).
		return nil
	}
	defer s.leave()
	ctx, cancel := s.releaseContext(ctx)
	defer cancel()
	return s.handBack(ctx, t.d, t.k)
}

// releaseContext bounds a hand-back: during a drain with a deadline, by
// handBacksBy, however late it starts (one that ran past it would publish
// its copy after the channel closed, and the original, requeued by the
// close, would be delivered twice); otherwise by ctx alone.
func (s *subscription) releaseContext(ctx context.Context) (context.Context, context.CancelFunc) {
	by := s.handBacksBy.Load()
	if by == 0 || !s.IsStopping() {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, time.Unix(0, by))
}
