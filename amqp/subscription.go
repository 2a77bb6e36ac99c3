package amqp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels/broker"
)

// subscription consumes the group queue of one channel on an AMQP channel
// of its own, with prefetch = MaxInFlight, on the kit's delivery skeleton.
type subscription struct {
	*broker.Consumer
	a     *Adapter
	l     *live
	cs    *session // the consuming session
	ch    *broker.Channel
	opts  ChannelOptions
	queue string
	tag   string
	log   *slog.Logger
	// gq is the group queue as this channel declares it; asIs is set when
	// the queue exists with other arguments and is used as it is (declared
	// passively); qtype is the type the queue has (QueueQuorum or
	// QueueClassic), which its retry queues get.
	gq   groupQueue
	asIs atomic.Bool
	// closes tells why the consumer channel closed (set by the fetch loop).
	closes chan *amqp091.Error
	// removed: RemoveChannel or RemoveGroup deleted the group queue; the
	// consumer is not resumed.
	removed atomic.Bool
	qtype   atomic.Value
	// cancelGaveUp is closed when basic.cancel got no answer by the
	// drain's deadline.
	cancelGaveUp chan struct{}
	gaveUp       sync.Once
	// timers are the pending hand-backs of messages whose settling failed
	// (nil once the drain finished).
	tmu    sync.Mutex
	timers map[*time.Timer]pendingBack
	// backs counts the hand-backs admitted (enter) before Finish.
	backs sync.WaitGroup

	mu  sync.Mutex
	cur *amqp091.Channel // the consumer channel
	ack *acker           // the acker of cur, once consuming
	// consuming: basic.consume succeeded on cur and was not cancelled.
	consuming bool
	// finished: the drain's Finish ran (after a deadline, possibly while
	// the fetch loop was still opening a channel): no channel is kept.
	finished bool
	// finishing: the drain's Finish began; no hand-back is admitted.
	finishing bool
}

func newSubscription(a *Adapter, l *live, ch *broker.Channel, opts ChannelOptions, gq groupQueue) *subscription {
	tag := ch.ConsumerName
	if tag == "" {
		tag = ch.Group + "." + ch.Name
	}
	if len(tag) > 200 {
		tag = tag[:200]
	}
	s := &subscription{Consumer: broker.NewConsumer(ch), a: a, l: l, ch: ch, opts: opts, gq: gq,
		queue: QueueName(ch.Name, ch.Group), tag: tag + "." + a.nextID(), log: ch.Logger,
		cancelGaveUp: make(chan struct{}), timers: map[*time.Timer]pendingBack{}}
	s.qtype.Store(gq.typ)
	return s
}

// queueType is the type of the group queue (QueueQuorum or QueueClassic).
func (s *subscription) queueType() string { return s.qtype.Load().(string) }

// openChannel opens the consumer channel on c and declares the topology on
// it, bounded by ctx. A group queue that exists with other arguments than
// the ones this channel declares (a classic queue from an earlier version
// or from @moleculer/channels, a quorum queue with another delivery limit)
// is used as it is, with a warning, unless the options chose another queue
// type than it has: RabbitMQ cannot change the type or arguments of a
// queue. Its type is found by probeQueue.
func (s *subscription) openChannel(ctx context.Context, c *amqp091.Connection) (*amqp091.Channel, error) {
	ch, err := s.declareOn(ctx, c)
	var qm *queueMismatch
	switch {
	case err == nil:
		return ch, nil
	case s.asIs.Load() && isCode(err, amqp091.NotFound):
		// The queue used as it is was deleted: declare it as configured.
		s.asIs.Store(false)
		s.qtype.Store(s.gq.typ)
		return s.declareOn(ctx, c)
	case errors.As(err, &qm) && isCode(err, amqp091.PreconditionFailed):
		q := s.opts.Queue
		typ, found, perr := probeQueue(ctx, c, s.queue, q, s.gq.args)
		if perr != nil {
			return nil, errors.Join(err, perr)
		}
		if s.gq.explicit && typ != s.gq.typ {
			return nil, fmt.Errorf("%w (the group queue exists with other arguments (type %q); RabbitMQ cannot change a queue's type or arguments: delete the queue once it is empty, or declare it as it exists)", err, typ)
		}
		if typ != QueueQuorum {
			// Another type, or one the probe could not tell: the adapter
			// counts deliveries itself, as on a classic queue.
			typ = QueueClassic
		}
		s.asIs.Store(true)
		s.qtype.Store(typ)
		hint := "an existing classic queue stays classic: delete it once empty to have it declared as a quorum queue, or set QueueType classic"
		if typ == QueueQuorum {
			hint = "RabbitMQ cannot change the arguments of a queue: delete it once empty to have it declared with this channel's arguments"
			if _, ok := found["x-dead-letter-strategy"]; ok {
				hint = "the queue has no x-dead-letter-strategy at-least-once: RabbitMQ dead-letters from it at most once (a dead letter can be lost); " + hint
			}
		}
		s.log.Warn("channels/amqp: the group queue exists with other arguments than this channel declares; it is used as it is",
			"channel", s.ch.Name, "group", s.ch.Group, "queue", s.queue, "type", typ,
			"reason", broker.Redact(err.Error()), "hint", hint)
		return s.declareOn(ctx, c)
	}
	return nil, err
}

// declareOn opens a channel on c and declares the topology on it.
func (s *subscription) declareOn(ctx context.Context, c *amqp091.Connection) (*amqp091.Channel, error) {
	ch, err := openChannel(ctx, c, false)
	if err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() {
		if err := declareChannel(ch, s); err != nil {
			done <- err
			return
		}
		done <- ch.Qos(s.MaxInFlight(), 0, false)
	}()
	select {
	case err = <-done:
	case <-ctx.Done():
		go func() { _ = ch.Close() }() // ends the declarations, unless the link is frozen
		return nil, ctx.Err()
	}
	if err != nil {
		go func() { _ = ch.Close() }()
		return nil, err
	}
	return ch, nil
}

// setChannel makes ch the consumer channel; false (ch closed) once the
// drain finished.
func (s *subscription) setChannel(ch *amqp091.Channel) bool {
	s.mu.Lock()
	if s.finished {
		s.mu.Unlock()
		_ = ch.Close()
		return false
	}
	s.cur = ch
	s.mu.Unlock()
	return true
}

// Start begins consuming; it runs once.
func (s *subscription) Start() { s.Consumer.Start(s.loop) }

// loop consumes until the drain, resuming on a new channel (and, when the
// connection was lost, a new connection) with the topology declared again
// whenever the consumer channel closes or the broker cancels the consumer.
func (s *subscription) loop() {
	rc := broker.Reconnect{Backoff: s.a.reconnect}
	for !s.IsStopping() {
		deliveries, ch, err := s.consume()
		if err != nil {
			if s.IsStopping() {
				return
			}
			s.log.Warn("channels/amqp: cannot consume, retrying", "channel", s.ch.Name, "group", s.ch.Group,
				"error", broker.Redact(err.Error()), "in", rc.Next())
			if _, ok := rc.Failed(s.Stopping()); !ok {
				return
			}
			continue
		}
		started := time.Now()
		s.mu.Lock()
		k := s.ack
		s.mu.Unlock()
		if !s.fetch(deliveries, k) {
			return
		}
		if s.removed.Load() {
			ctx, cancel := context.WithTimeout(context.Background(), DefaultOpTimeout)
			_ = k.close(ctx)
			cancel()
			go func() { _ = ch.Close() }()
			s.log.Info("channels/amqp: the group queue was removed; its consumer stops", "channel", s.ch.Name,
				"group", s.ch.Group, "queue", s.queue)
			<-s.Stopping()
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), DefaultOpTimeout)
		_ = k.close(ctx)
		cancel()
		// The channel closed or the broker cancelled the consumer (its
		// queue was deleted): start over on a fresh channel.
		if err := ch.Close(); err != nil && !errors.Is(err, amqp091.ErrClosed) {
			s.log.Debug("channels/amqp: closing the consumer channel", "error", err)
		}
		if time.Since(started) >= StableAfter {
			rc.Succeeded()
			s.logChannelLoss(false, 0)
			continue
		}
		// Lost soon after it started: back off before resuming.
		s.logChannelLoss(true, rc.Next())
		if _, ok := rc.Failed(s.Stopping()); !ok {
			return
		}
	}
}

// consume starts basic.consume on the current channel, or on a new one
// (topology declared again) when it is closed.
func (s *subscription) consume() (<-chan amqp091.Delivery, *amqp091.Channel, error) {
	s.mu.Lock()
	ch := s.cur
	s.mu.Unlock()
	if ch == nil || ch.IsClosed() {
		c, ok := s.cs.wait(s.Stopping())
		if !ok {
			return nil, nil, broker.ErrClosed
		}
		ctx, cancel := context.WithTimeout(context.Background(), DefaultOpTimeout)
		var err error
		ch, err = s.openChannel(ctx, c)
		cancel()
		if err != nil {
			return nil, nil, err
		}
		if !s.setChannel(ch) {
			return nil, nil, broker.ErrClosed
		}
	}
	co := s.opts.Consumer
	s.closes = ch.NotifyClose(make(chan *amqp091.Error, 1))
	deliveries, err := ch.Consume(s.queue, s.tag, false, co.Exclusive, false, false, co.Arguments)
	if err != nil {
		_ = ch.Close()
		return nil, nil, err
	}
	s.mu.Lock()
	if s.finished {
		s.mu.Unlock()
		_ = ch.Close()
		return nil, nil, broker.ErrClosed
	}
	s.consuming = true
	s.ack = newAcker(ch, max(s.MaxInFlight(), 16))
	s.mu.Unlock()
	if s.IsStopping() {
		ctx, cancel := context.WithTimeout(context.Background(), DefaultOpTimeout)
		s.cancelConsumer(ctx)
		cancel()
	}
	return deliveries, ch, nil
}

// closeReason returns why the consumer channel closed (nil: unknown, or
// the connection closed with it). amqp091 ends the deliveries just before
// it tells why, so it waits for that a little.
func (s *subscription) closeReason() *amqp091.Error {
	t := time.NewTimer(100 * time.Millisecond)
	defer t.Stop()
	select {
	case e := <-s.closes:
		return e
	case <-t.C:
		return nil
	}
}

// isConsumerTimeout reports RabbitMQ's consumer_timeout closing a channel:
// a delivery stayed unacknowledged longer than the broker allows (30
// minutes by default), and RabbitMQ closed the channel with 406
// PRECONDITION_FAILED "delivery acknowledgement on channel N timed out".
func isConsumerTimeout(e *amqp091.Error) bool {
	return e != nil && e.Code == amqp091.PreconditionFailed && strings.Contains(e.Reason, "acknowledgement") &&
		strings.Contains(e.Reason, "timed out")
}

// logChannelLoss says why the consumer channel closed.
func (s *subscription) logChannelLoss(soon bool, in time.Duration) {
	e := s.closeReason()
	if isConsumerTimeout(e) {
		s.log.Error("channels/amqp: RabbitMQ closed the consumer channel because a message stayed unacknowledged longer than its consumer_timeout (30 min by default): a handler ran too long. Every message unacknowledged on the channel is delivered again (the long one too, and its run counts as unfinished). Raise consumer_timeout in rabbitmq.conf (or x-consumer-timeout on the queue, RabbitMQ 3.12+) above your longest handler, or shorten the handler",
			"channel", s.ch.Name, "group", s.ch.Group, "queue", s.queue, "reason", e.Reason)
	}
	reason := "closed"
	if e != nil {
		reason = broker.Redact(e.Error())
	}
	if soon {
		s.log.Warn("channels/amqp: consumer channel lost soon after it started, resuming after a backoff",
			"channel", s.ch.Name, "group", s.ch.Group, "reason", reason, "in", in)
		return
	}
	s.log.Warn("channels/amqp: consumer channel lost, resuming", "channel", s.ch.Name, "group", s.ch.Group, "reason", reason)
}

// fetch hands each delivery to the kit on a MaxInFlight slot. It returns
// false at the drain (after handing back what was delivered but not run),
// true when the deliveries ended otherwise (channel closed, consumer
// cancelled by the broker).
func (s *subscription) fetch(deliveries <-chan amqp091.Delivery, k *acker) bool {
	for {
		if !s.Acquire() {
			s.releaseRest(deliveries, k)
			return false
		}
		select {
		case d, ok := <-deliveries:
			if !ok {
				s.ReleaseSlot()
				return !s.IsStopping()
			}
			k.delivered(d.DeliveryTag)
			if s.IsStopping() {
				s.ReleaseSlot()
				_ = k.nack(d.DeliveryTag)
				s.releaseRest(deliveries, k)
				return false
			}
			s.handle(&d, k)
		case <-s.Stopping():
			s.ReleaseSlot()
			s.releaseRest(deliveries, k)
			return false
		}
	}
}

// releaseRest hands back, unrun, every message still delivered to the
// stopping consumer, until the deliveries end (the consumer was cancelled
// by the drain, or its channel closed).
func (s *subscription) releaseRest(deliveries <-chan amqp091.Delivery, k *acker) {
	for {
		select {
		case d, ok := <-deliveries:
			if !ok {
				return
			}
			k.delivered(d.DeliveryTag)
			_ = k.nack(d.DeliveryTag)
		case <-s.cancelGaveUp:
			// basic.cancel got no answer: what is still delivered is
			// requeued with the channel.
			return
		}
	}
}

// handBack returns a message unrun (or whose run was cut by our own stop)
// without counting a delivery: RabbitMQ counts a requeue as a delivery
// (x-delivery-count on quorum queues, the redelivered flag on classic
// ones), so a copy carrying the count so far (HeaderUnfinished, with
// HeaderOwner) goes to the tail of the group queue, confirmed, and the
// original is acked. When the copy cannot be published the message is
// requeued (nack), and that delivery counts.
func (s *subscription) handBack(ctx context.Context, d *amqp091.Delivery, k *acker) error {
	if err := s.copyBack(ctx, d, k); err != nil {
		s.log.Debug("channels/amqp: handing a message back by a copy failed; it is requeued", "channel", s.ch.Name,
			"group", s.ch.Group, "id", messageID(d), "error", broker.Redact(err.Error()))
		return k.nack(d.DeliveryTag)
	}
	return nil
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
	return k.ack(d.DeliveryTag)
}

// handle runs one delivery on the slot taken for it. A message redelivered
// by a classic queue (its consumer died, its channel was lost, or it was
// handed back) is first counted: see recount.
func (s *subscription) handle(d *amqp091.Delivery, k *acker) {
	h := readHistory(d.Headers, s.ch.Group, s.queueType() == QueueQuorum, d.Redelivered)
	if d.Redelivered && !h.quorum {
		s.Go(func() {
			defer s.ReleaseSlot()
			s.recount(d, h, k)
		})
		return
	}
	s.Run(s.delivery(d, h, k), nil)
}

// delivery builds the kit's delivery.
func (s *subscription) delivery(d *amqp091.Delivery, h history, k *acker) *broker.Delivery {
	// One allocation for the kit's delivery, its message and the settler.
	x := &struct {
		bd  broker.Delivery
		msg broker.Message
		st  settler
	}{}
	msg := &x.msg
	msg.SetSerializer(s.ch.Serializer)
	msg.Channel, msg.Group, msg.ID = s.ch.Name, s.ch.Group, messageID(d)
	msg.Payload, msg.Headers, msg.Timestamp, msg.Raw = d.Body, fromTable(d.Headers), d.Timestamp, d
	msg.Attempt = 1 + h.failed
	x.st = settler{s: s, d: d, k: k, h: h, id: msg.ID}
	x.bd = broker.Delivery{Msg: msg, Deliveries: h.failed + h.unfinished + 1, Final: h.final, Failure: h.failure,
		Settle: &x.st}
	return &x.bd
}

// messageID is the message id property, else the correlation id, else the
// consumer tag and delivery tag (what @moleculer/channels uses).
func messageID(d *amqp091.Delivery) string {
	switch {
	case d.MessageId != "":
		return d.MessageId
	case d.CorrelationId != "":
		return d.CorrelationId
	}
	return d.ConsumerTag + ":" + strconv.FormatUint(d.DeliveryTag, 10)
}

// recount persists one more unfinished delivery of a message a classic
// queue redelivered: a copy with HeaderUnfinished + 1 goes to the tail of
// the group queue (confirmed), then the original is acked; the copy is what
// runs. Classic queues count no deliveries and a requeue cannot change a
// message, so this is how a message that keeps killing its consumers
// reaches MaxDeliveries. It costs one confirmed publish, only on
// redeliveries.
func (s *subscription) recount(d *amqp091.Delivery, h history, k *acker) {
	ctx, cancel := context.WithTimeout(context.Background(), broker.DefaultSettleTimeout)
	defer cancel()
	t := copyTable(d.Headers, 2)
	t[HeaderUnfinished] = int32(h.unfinished + 1)
	t[HeaderOwner] = s.ch.Group
	p := republishing(d, t)
	if p.MessageId == "" {
		p.MessageId = messageID(d)
	}
	if err := s.l.pub.settle(ctx, "", s.queue, p); err != nil {
		s.log.Warn("channels/amqp: counting a redelivered message failed; it is handed back", "channel", s.ch.Name,
			"group", s.ch.Group, "id", messageID(d), "error", broker.Redact(err.Error()))
		s.handBackLater(d, k)
		return
	}
	_ = k.ack(d.DeliveryTag)
}

// pendingBack is a message whose settling failed, waiting to be handed
// back, with the acker of the channel it came on.
type pendingBack struct {
	d *amqp091.Delivery
	k *acker
}

// handBackLater hands back a message whose settling failed, after
// DefaultSettleFailureDelay, so a lasting failure does not spin. The hand-back
// is a copy (see handBack), which no broker counts as a delivery: while the
// publishing connection is down the message stays unacknowledged on this
// consumer and the hand-back is tried again after the same delay (a requeue
// would raise a quorum queue's x-delivery-count for a failure of ours, and
// an outage of a few seconds would use up the message's delivery budget).
// A copy that fails on a live connection is requeued (nack).
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
		ctx, cancel := context.WithTimeout(context.Background(), broker.DefaultSettleTimeout)
		err := s.copyBack(ctx, d, k)
		cancel()
		switch {
		case err == nil:
		case s.l.sess.current() == nil:
			s.handBackLater(d, k)
		default:
			_ = k.nack(d.DeliveryTag)
		}
	})
	s.timers[t] = pendingBack{d, k}
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
	for _, b := range backs {
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

// cancelConsumer stops the broker's deliveries (basic.cancel, awaited,
// bounded by ctx; on timeout the channel is closed, which requeues
// everything unacked).
func (s *subscription) cancelConsumer(ctx context.Context) {
	s.mu.Lock()
	ch, consuming := s.cur, s.consuming
	s.consuming = false
	s.mu.Unlock()
	if ch == nil || !consuming {
		return
	}
	err := bounded(ctx, "cancelling the consumer", func() error { return ch.Cancel(s.tag, false) })
	var ab *broker.AbandonedError
	if errors.As(err, &ab) {
		// No answer (a frozen link): closing the channel requeues what it
		// holds, once the broker hears of it; the fetch loop stops
		// waiting for the end of the deliveries.
		s.gaveUp.Do(func() { close(s.cancelGaveUp) })
		go func() { _ = ch.Close() }()
	}
}

// Drain cancels the consumer at once (the messages it was delivered but
// did not run are handed back by the fetch loop), waits for running
// handlers (bounded by ctx), then closes the consumer channel.
func (s *subscription) Drain(ctx context.Context) error {
	return s.Consumer.Drain(ctx, broker.DrainHooks{
		StopFetching: func(ctx context.Context) {
			// basic.cancel gets half of what is left of the drain (its
			// answer takes a round trip; none comes on a frozen link), so
			// the rest is left for the running handlers.
			limit := DefaultOpTimeout
			if dl, ok := ctx.Deadline(); ok {
				limit = min(limit, time.Until(dl)/2)
			}
			cctx, cancel := context.WithTimeout(ctx, limit)
			defer cancel()
			s.cancelConsumer(cctx)
		},
		Finish: func(ctx context.Context, timedOut bool) error {
			defer s.a.subs.Remove(s)
			defer s.l.forget(s)
			// The handlers cut by the deadline return at once (their context
			// is cancelled) and hand their messages back (Release): they get
			// releaseGrace past the deadline to do it before the channel
			// closes, and so do the queued acks.
			dl, ok := ctx.Deadline()
			if !ok {
				dl = time.Now().Add(DefaultOpTimeout)
			}
			gctx, cancel := context.WithDeadline(context.Background(), later(dl, time.Now().Add(releaseGrace)))
			defer cancel()
			if timedOut {
				s.waitSettled(gctx)
			}
			// The order: the pending hand-backs of failed settles, then the
			// hand-backs under way (Release, timers) end, then the queued
			// acks go out, then the channel closes.
			s.flushBacks(gctx, s.stopTimers())
			s.mu.Lock()
			s.finishing = true
			s.mu.Unlock()
			s.waitBacks(gctx)
			s.mu.Lock()
			ch, k := s.cur, s.ack
			s.cur, s.ack, s.finished = nil, nil, true
			s.mu.Unlock()
			if k != nil {
				_ = k.close(gctx) // the queued acks go out before the channel closes
			}
			if ch != nil {
				// Anything still unacked (a handler cut by the deadline) is
				// requeued by the broker with the channel.
				if err := closeChannel(gctx, ch); err != nil {
					return fmt.Errorf("channels/amqp: close consumer channel: %w", err)
				}
			}
			return nil
		},
	})
}

// releaseGrace is how long past a drain's deadline the handlers it cut may
// take to hand their messages back, and the acks to go out, before the
// consumer channel closes.
const releaseGrace = 40 * time.Millisecond

// waitSettled waits until every delivery of the channel is settled, or ctx
// ends.
func (s *subscription) waitSettled(ctx context.Context) {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for s.pending() > 0 {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// settler carries out the kit's outcome for one delivery.
type settler struct {
	s  *subscription
	d  *amqp091.Delivery
	k  *acker
	h  history
	id string
}

func (t *settler) Ack(context.Context) error { return t.k.ack(t.d.DeliveryTag) }

// Retry publishes a copy with x-redelivered-count + 1, x-group and the
// failure's x-error-* headers to the retry queue of the delay (RabbitMQ
// dead-letters it back to the group queue when its TTL ends), confirmed,
// then acks the original.
func (t *settler) Retry(ctx context.Context, delay time.Duration, failure map[string]string) error {
	h := t.copyHeaders(failure)
	h[broker.HeaderRedeliveredCount] = int32(t.h.failed + 1)
	return t.republish(ctx, delay, h)
}

// Keep publishes a copy marked final with the failure (same attempt) to
// the retry queue of DefaultKeepDelay, confirmed, then acks the original:
// the copy is dead-lettered again without running.
func (t *settler) Keep(ctx context.Context, failure map[string]string) error {
	h := t.copyHeaders(failure)
	h[HeaderFinal] = true
	return t.republish(ctx, DefaultKeepDelay, h)
}

func (t *settler) copyHeaders(failure map[string]string) amqp091.Table {
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

func (t *settler) republish(ctx context.Context, delay time.Duration, h amqp091.Table) error {
	s := t.s
	p := republishing(t.d, h)
	if p.MessageId == "" {
		p.MessageId = t.id
	}
	err := s.publishDelayed(ctx, delay, p)
	if err != nil {
		s.handBackLater(t.d, t.k)
		return err
	}
	return t.k.ack(t.d.DeliveryTag)
}

// publishDelayed publishes p to the group queue after delay, through the
// retry queue of the delay (straight to the group queue without delay).
func (s *subscription) publishDelayed(ctx context.Context, delay time.Duration, p amqp091.Publishing) error {
	if delay <= 0 {
		return s.l.pub.settle(ctx, "", s.queue, p)
	}
	for try := 0; ; try++ {
		rq, err := s.l.topo.retryQueue(ctx, s.queue, delay, durable(s.opts.Queue.Durable), s.queueType())
		if err != nil {
			return err
		}
		err = s.l.pub.settle(ctx, "", rq, p)
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
func (t *settler) DeadLetter(ctx context.Context, payload []byte, headers map[string]string) error {
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
	return err
}

// Release hands the message back (see handBack): no attempt is used up
// (x-redelivered-count is unchanged) and no delivery is counted.
func (t *settler) Release(ctx context.Context) error {
	s := t.s
	if !s.enter() {
		// The drain's Finish closes the channel: RabbitMQ requeues the
		// message (and counts that delivery).
		return nil
	}
	defer s.leave()
	ctx, cancel := context.WithDeadline(ctx, time.Now().Add(releaseGrace))
	defer cancel()
	return s.handBack(ctx, t.d, t.k)
}

// pending counts the messages delivered to this subscription and not
// settled yet.
func (s *subscription) pending() int64 {
	s.mu.Lock()
	k := s.ack
	s.mu.Unlock()
	if k == nil {
		return 0
	}
	return k.outstanding()
}
