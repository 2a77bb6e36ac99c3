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

	"github.com/microchannels/channels/kit"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels/broker"
)

// subscription consumes the group queue of one channel on an AMQP channel
// of its own, with prefetch = MaxInFlight, on the kit's delivery skeleton.
type subscription struct {
	*kit.Consumer
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
	// handBacksBy is the end of the hand-backs of the drain under way
	// (unix nanoseconds; 0: none, or a drain without deadline).
	handBacksBy atomic.Int64

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
	s := &subscription{Consumer: kit.NewConsumer(ch), a: a, l: l, ch: ch, opts: opts, gq: gq,
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
	rc := kit.Reconnect{Backoff: s.a.reconnect}
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
	s.ack = newAcker(ch, max(s.MaxInFlight(), 16), s.MaxInFlight()/4, s.MaxInFlight())
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
			s.handle(&inbound{d: d}, k)
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

// handle runs one delivery on the slot taken for it. A message redelivered
// by a classic queue (its consumer died, its channel was lost, or it was
// handed back) is first counted: see recount.
func (s *subscription) handle(x *inbound, k *acker) {
	d := &x.d
	h := readHistory(d.Headers, s.ch.Group, s.queueType() == QueueQuorum, d.Redelivered)
	if d.Redelivered && !h.quorum {
		s.Go(func() {
			if h, run := s.recount(d, h, k); run {
				s.Run(s.kitDelivery(x, h, k), nil) // on the slot taken for d
				return
			}
			s.ReleaseSlot()
		})
		return
	}
	s.Run(s.kitDelivery(x, h, k), nil)
}

// inbound is one delivery with the kit's delivery, its message and its
// settler: one allocation per message.
type inbound struct {
	d   amqp091.Delivery
	bd  kit.Delivery
	msg broker.Message
	st  delivery
}

// kitDelivery builds the kit's delivery of x.d.
func (s *subscription) kitDelivery(x *inbound, h history, k *acker) *kit.Delivery {
	d := &x.d
	msg := &x.msg
	msg.SetSerializer(s.ch.Serializer)
	msg.Channel, msg.Group, msg.ID = s.ch.Name, s.ch.Group, messageID(d)
	msg.Payload, msg.Headers, msg.Timestamp, msg.Raw = d.Body, fromTable(d.Headers), d.Timestamp, d
	msg.Attempt = 1 + h.failed
	x.st = delivery{s: s, d: d, k: k, h: h, id: msg.ID}
	x.bd = kit.Delivery{Msg: msg, Deliveries: h.failed + h.unfinished + 1, Final: h.final, Failure: h.failure,
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
