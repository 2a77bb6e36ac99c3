package amqp

import (
	"context"
	"errors"
	"time"

	"github.com/microchannels/channels/kit"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels/broker"
)

// handBack returns a message unrun (or whose run was cut by our own stop)
// without counting a delivery: RabbitMQ counts a requeue as a delivery
// (x-delivery-count on quorum queues, the redelivered flag on classic
// ones), so a copy carrying the count so far (HeaderUnfinished, with
// HeaderOwner) goes to the tail of the group queue, confirmed, and the
// original is acked. When the copy cannot be published the message is
// requeued (nack), and that delivery counts. When the copy was written and
// its confirm is unknown (it may be in the queue), the original is not
// nacked: during a drain the channel's close requeues it, otherwise it is
// handed back later (see handBackLater).
func (s *subscription) handBack(ctx context.Context, d *amqp091.Delivery, k *acker) error {
	err := s.copyBack(ctx, d, k)
	switch {
	case err == nil:
		return nil
	case confirmUnknown(err):
		s.log.Debug("channels/amqp: the confirm of a hand-back copy is unknown; the message is not requeued", "channel", s.ch.Name,
			"group", s.ch.Group, "id", messageID(d), "error", broker.Redact(err.Error()))
		if !s.IsStopping() {
			s.handBackLater(d, k)
		}
		return err
	}
	s.log.Debug("channels/amqp: handing a message back by a copy failed; it is requeued", "channel", s.ch.Name,
		"group", s.ch.Group, "id", messageID(d), "error", broker.Redact(err.Error()))
	return k.nack(d.DeliveryTag)
}

// confirmUnknown reports a copy written whose confirm did not come: it may
// be in the queue.
func confirmUnknown(err error) bool {
	return errors.Is(err, errConfirmUnknown) || errors.Is(err, errUnconfirmed)
}

// copyBack publishes the hand-back copy of d (see handBack) and acks d;
// on an error d is left unacknowledged.
func (s *subscription) copyBack(ctx context.Context, d *amqp091.Delivery, k *acker) error {
	h := readHistory(d.Headers, s.ch.Group, s.queueType() == QueueQuorum, d.Redelivered)
	n := h.unfinished
	if d.Redelivered && !h.quorum {
		n++ // the delivery before this one ended unfinished and was not counted
	}
	t := copyTable(d.Headers, 3)
	if n > 0 {
		t[HeaderUnfinished] = int32(n)
	}
	if h.final {
		t[HeaderFinal] = true
	}
	t[HeaderOwner] = s.ch.Group
	p := republishing(d, t)
	if p.MessageId == "" {
		p.MessageId = messageID(d)
	}
	if err := s.l.pub.settle(ctx, "", s.queue, p); err != nil {
		return err
	}
	return k.ackNow(d.DeliveryTag)
}

// recount persists one more unfinished delivery of a message a classic
// queue redelivered: a copy with HeaderUnfinished + 1 goes to the tail of
// the group queue (confirmed), then the original is acked; the copy is what
// runs. Classic queues count no deliveries and a requeue cannot change a
// message, so this is how a message that keeps killing its consumers
// reaches MaxDeliveries. It costs one confirmed publish, only on
// redeliveries.
//
// It returns the history to run d with, and true, when the broker refused
// the copy for a reason that lasts (it does not fit the connection's
// frame_max, or the queue is full and rejects publishes: handing it back
// would fail the same way, and its requeue would be redelivered and
// recounted forever): d then runs with the count kept in memory only.
// Otherwise d was acked (the copy runs) or is handed back later.
func (s *subscription) recount(d *amqp091.Delivery, h history, k *acker) (history, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), kit.DefaultSettleTimeout)
	defer cancel()
	t := copyTable(d.Headers, 2)
	t[HeaderUnfinished] = int32(h.unfinished + 1)
	t[HeaderOwner] = s.ch.Group
	p := republishing(d, t)
	if p.MessageId == "" {
		p.MessageId = messageID(d)
	}
	err := s.l.pub.settle(ctx, "", s.queue, p)
	switch {
	case err == nil:
		_ = k.ackNow(d.DeliveryTag)
	case refusedLastingly(err):
		s.log.Warn("channels/amqp: counting a redelivered message was refused; it runs with the count kept in memory",
			"channel", s.ch.Name, "group", s.ch.Group, "id", messageID(d), "error", broker.Redact(err.Error()))
		h.unfinished++
		return h, true
	default:
		s.log.Warn("channels/amqp: counting a redelivered message failed; it is handed back", "channel", s.ch.Name,
			"group", s.ch.Group, "id", messageID(d), "error", broker.Redact(err.Error()))
		s.handBackLater(d, k)
	}
	return h, false
}

// refusedLastingly reports a copy the broker (or the frame check before
// it) refused for a reason a later try would meet again: too large for
// frame_max, nacked (a full queue with x-overflow reject-publish), or
// returned as unroutable.
func refusedLastingly(err error) bool {
	var ret *ReturnedError
	return errors.Is(err, broker.ErrTooLarge) || errors.Is(err, errNacked) || errors.As(err, &ret)
}

// pendingBack is a message whose settling failed, waiting to be handed
// back, with the acker of the channel it came on.
type pendingBack struct {
	d *amqp091.Delivery
	k *acker
	// pend, when set, is the confirm of the copy written for d while
	// RabbitMQ blocked publishing (see awaitConfirm).
	pend *pendingConfirm
}

// handBackLater hands back a message whose settling failed, after
// DefaultSettleFailureDelay, so a lasting failure does not spin. The hand-back
// is a copy (see handBack), which no broker counts as a delivery: while the
// publishing connection is down the message stays unacknowledged on this
// consumer and the hand-back is tried again after the same delay (a requeue
// would raise a quorum queue's x-delivery-count for a failure of ours, and
// an outage of a few seconds would use up the message's delivery budget).
// A copy that fails because publishing is unavailable (see
// publishingUnavailable: a resource alarm, a frozen link) is tried again
// the same way; one the broker refused (nack, return) is requeued (nack).
func (s *subscription) handBackLater(d *amqp091.Delivery, k *acker) {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	if s.timers == nil {
		// The drain finished: the channel's close requeues the message.
		return
	}
	var t *time.Timer
	t = time.AfterFunc(DefaultSettleFailureDelay, func() {
		s.tmu.Lock()
		_, live := s.timers[t]
		delete(s.timers, t)
		s.tmu.Unlock()
		if !live || !s.enter() {
			return
		}
		defer s.leave()
		if !s.current(k) {
			// The channel the message came on closed: RabbitMQ requeued it.
			return
		}
		if s.l.sess.current() == nil {
			s.handBackLater(d, k)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), kit.DefaultSettleTimeout)
		err := s.copyBack(ctx, d, k)
		cancel()
		switch {
		case err == nil:
		case s.l.sess.current() == nil || publishingUnavailable(err):
			s.handBackLater(d, k)
		default:
			_ = k.nack(d.DeliveryTag)
		}
	})
	s.timers[t] = pendingBack{d: d, k: k}
}

// awaitConfirm settles d once the confirm of its copy (a retry or kept
// copy written while RabbitMQ blocked publishing) comes: RabbitMQ holds a
// message a blocked connection wrote until the alarm ends, then takes and
// confirms it. It checks every DefaultSettleFailureDelay; once publishing
// is unblocked it waits for the confirm up to kit.DefaultSettleTimeout:
// acked, d is acked (the copy is the message now, and the attempt does not
// run again); refused (nack, return, the channel closed) or still not
// confirmed, d is handed back (handBackLater).
func (s *subscription) awaitConfirm(d *amqp091.Delivery, k *acker, pend *pendingConfirm) {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	if s.timers == nil {
		// The drain finished: the channel's close requeues the message.
		pend.abandon()
		return
	}
	var t *time.Timer
	t = time.AfterFunc(DefaultSettleFailureDelay, func() {
		s.tmu.Lock()
		_, live := s.timers[t]
		delete(s.timers, t)
		s.tmu.Unlock()
		if !live || !s.enter() {
			pend.abandon()
			return
		}
		defer s.leave()
		if !s.current(k) {
			pend.abandon() // the channel closed: RabbitMQ requeued the message
			return
		}
		if s.l.sess.isBlocked() {
			s.awaitConfirm(d, k, pend) // still blocked
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), kit.DefaultSettleTimeout)
		err, settled := pend.wait(ctx)
		cancel()
		switch {
		case settled && err == nil:
			_ = k.ackNow(d.DeliveryTag)
		case s.l.sess.isBlocked() && !settled:
			s.awaitConfirm(d, k, pend) // blocked again
		default:
			if !settled {
				pend.abandon()
			}
			s.log.Debug("channels/amqp: the copy written during a resource alarm was not confirmed; the message is handed back",
				"channel", s.ch.Name, "group", s.ch.Group, "id", messageID(d), "error", broker.Redact(errText(err)))
			s.handBackLater(d, k)
		}
	})
	s.timers[t] = pendingBack{d: d, k: k, pend: pend}
}

// errText is err's text ("" for nil).
func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// publishingUnavailable reports a copy that failed because publishing was
// unavailable, not because the broker refused it: the connection down or
// blocked by a resource alarm, the channel closed before the confirm, a
// write stuck on a frozen link, or the wait ending by its deadline. Such a
// hand-back is tried again later; a requeue would count a delivery.
func publishingUnavailable(err error) bool {
	var ab *broker.AbandonedError
	return errors.Is(err, errBlocked) || errors.Is(err, errDown) || errors.Is(err, amqp091.ErrClosed) ||
		confirmUnknown(err) || errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ab)
}

// stopTimers cancels the pending hand-backs, refuses new ones and returns
// the messages they were for.
func (s *subscription) stopTimers() []pendingBack {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	var out []pendingBack
	for t, p := range s.timers {
		if t.Stop() {
			out = append(out, p)
		}
	}
	s.timers = nil
	return out
}

// flushBacks hands back, by copies, the messages whose settling failed and
// whose hand-back was still waiting, each once the publishing connection
// is up, bounded by ctx; the others are requeued with the channel.
func (s *subscription) flushBacks(ctx context.Context, backs []pendingBack) {
	defer func() {
		for _, b := range backs {
			if b.pend != nil {
				b.pend.abandon() // no-op for a confirm that settled
			}
		}
	}()
	for i, b := range backs {
		if b.pend != nil {
			// A copy written during a resource alarm: acked if its confirm
			// comes in time, else the original is left to the channel's
			// close (the copy may be in the queue).
			err, settled := b.pend.wait(ctx)
			if !settled {
				b.pend.abandon()
				continue
			}
			if err == nil {
				if s.current(b.k) {
					_ = b.k.ackNow(b.d.DeliveryTag)
				}
				continue
			}
			backs[i].pend = nil
		}
		if !s.current(b.k) {
			continue
		}
		if _, ok := s.l.sess.wait(ctx.Done()); !ok {
			return
		}
		_ = s.copyBack(ctx, b.d, b.k)
	}
}

// current reports whether k is the acker of the open consumer channel.
func (s *subscription) current(k *acker) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ack == k && s.cur != nil && !s.cur.IsClosed()
}

// enter admits a hand-back that settles on the consumer channel; false
// once the drain's Finish began (the channel closes, and requeues what is
// unacknowledged). Finish waits for the admitted ones (leave) before it
// flushes the acks and closes the channel.
func (s *subscription) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.finishing {
		return false
	}
	s.backs.Add(1)
	return true
}

func (s *subscription) leave() { s.backs.Done() }

// waitBacks waits for the admitted hand-backs, bounded by ctx.
func (s *subscription) waitBacks(ctx context.Context) {
	done := make(chan struct{})
	go func() { s.backs.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}
