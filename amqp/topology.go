package amqp

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels/broker"
)

// QueueName is the queue of group on channel, as @moleculer/channels names
// it: "<group>.<channel>".
func QueueName(channel, group string) string { return group + "." + channel }

// RetryQueueName is the queue where the retries of queue wait delay before
// RabbitMQ dead-letters them back to queue: "<queue>.retry.<ms>ms".
func RetryQueueName(queue string, delay time.Duration) string {
	return queue + ".retry." + strconv.FormatInt(delayBucket(delay), 10) + "ms"
}

// delayBucket rounds a delay up to whole milliseconds with at most two
// significant digits (137 ms -> 140 ms, 2345 ms -> 2400 ms), so a backoff
// with many distinct delays (jitter) makes a bounded number of retry queues.
// It is never shorter than the delay asked for.
func delayBucket(d time.Duration) int64 {
	ms := int64((d + time.Millisecond - 1) / time.Millisecond)
	if ms < 1 {
		ms = 1
	}
	p := int64(1)
	for ms/p >= 100 {
		p *= 10
	}
	ms = (ms + p - 1) / p * p
	return min(ms, math.MaxInt32)
}

// retryLease is the x-expires of a retry queue of delay ms.
func retryLease(ms int64) int64 {
	return min(max(2*ms+int64(time.Minute/time.Millisecond), int64(DefaultRetryQueueLease/time.Millisecond)), math.MaxInt32)
}

// topology declares exchanges and queues on channels of its own and
// remembers what it declared, so that sends do not declare again.
type topology struct {
	sess *session
	// onRetry, when set, is told each retry queue declared (the adapter
	// keeps them for RemoveGroup across connections).
	onRetry func(queue, retryQueue string)

	mu        sync.Mutex
	gen       uint64               // the session's connection the maps are about
	exchanges map[string]bool      // declared (or found) channel exchanges
	retries   map[string]time.Time // retry queues, by when they were last declared
}

// freshLocked forgets what was learnt on an earlier connection: while the
// adapter was disconnected, exchanges and queues may have been deleted (or
// the broker restarted without them).
func (t *topology) freshLocked() {
	if g := t.sess.generation(); g != t.gen {
		t.gen = g
		clear(t.exchanges)
		clear(t.retries)
	}
}

func newTopology(sess *session) *topology {
	return &topology{sess: sess, exchanges: map[string]bool{}, retries: map[string]time.Time{}}
}

// withChannel runs f on a fresh channel of the current connection, bounded
// by ctx (a declaration that fails closes its channel).
func (t *topology) withChannel(ctx context.Context, f func(ch *amqp091.Channel) error) error {
	c := t.sess.current()
	if c == nil {
		return errDown
	}
	ch, err := openChannel(ctx, c, false)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- f(ch) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		// Closing the channel ends the call; on a frozen link neither
		// ends: both are left to the background.
		go func() { _ = ch.Close() }()
		return ctx.Err()
	}
	_ = closeChannel(ctx, ch)
	return err
}

func (t *topology) knownExchange(name string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.freshLocked()
	return t.exchanges[name]
}

func (t *topology) setExchange(name string, known bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.freshLocked()
	if known {
		t.exchanges[name] = true
	} else {
		delete(t.exchanges, name)
	}
}

// assertExchange declares the channel exchange name once (for sends). An
// exchange that exists with other properties (406) is used as it is.
func (t *topology) assertExchange(ctx context.Context, name string, o ExchangeOptions) error {
	if t.knownExchange(name) {
		return nil
	}
	err := t.withChannel(ctx, func(ch *amqp091.Channel) error {
		return ch.ExchangeDeclare(name, o.Type, durable(o.Durable), o.AutoDelete, false, false, o.Arguments)
	})
	if err != nil && !isCode(err, amqp091.PreconditionFailed) {
		return fmt.Errorf("declare exchange %q: %w", name, err)
	}
	t.setExchange(name, true)
	return nil
}

// retryQueue declares (or renews the lease of) the retry queue of queue
// for delay and returns its name. It has the type of the group queue
// (qtype): a quorum group queue gets quorum retry queues, so a retry
// waiting its backoff is replicated like the message it copies. A retry
// queue that exists with other arguments (one declared as classic by an
// earlier version) is used as it is. On RabbitMQ older than 3.10 retry
// queues are classic.
func (t *topology) retryQueue(ctx context.Context, queue string, delay time.Duration, durableQueue bool, qtype string) (string, error) {
	name := RetryQueueName(queue, delay)
	ms := delayBucket(delay)
	lease := retryLease(ms)
	t.mu.Lock()
	t.freshLocked()
	at, ok := t.retries[name]
	t.mu.Unlock()
	if ok && time.Since(at) < time.Duration(lease/2)*time.Millisecond {
		return name, nil
	}
	args := amqp091.Table{
		"x-message-ttl":             ms,
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": queue,
		"x-expires":                 lease,
	}
	quorum := qtype == QueueQuorum && durableQueue && serverAtLeast(t.sess.current(), 3, 10)
	if quorum {
		// Quorum queues take x-message-ttl from RabbitMQ 3.10 on, and
		// dead-letter at least once there: a copy whose TTL ended stays in
		// the retry queue until the group queue confirms it (a group queue
		// that rejects it, or has no leader, would otherwise lose it).
		args["x-queue-type"] = QueueQuorum
		args["x-dead-letter-strategy"] = "at-least-once"
		args["x-overflow"] = "reject-publish"
	}
	declare := func(args amqp091.Table) error {
		return t.withChannel(ctx, func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare(name, durableQueue, false, false, false, args)
			return err
		})
	}
	err := declare(args)
	if quorum && isCode(err, amqp091.PreconditionFailed) {
		// A quorum retry queue declared without at-least-once
		// dead-lettering (by a version of the adapter that did not add it)
		// is used as it is until it expires.
		old := make(amqp091.Table, len(args))
		for k, v := range args {
			if k != "x-dead-letter-strategy" && k != "x-overflow" {
				old[k] = v
			}
		}
		if err = declare(old); err == nil {
			t.sess.log.Warn("channels/amqp: the retry queue exists without x-dead-letter-strategy at-least-once; it is used as it is "+
				"(RabbitMQ dead-letters from it at most once) until it expires unused", "queue", name)
		}
	}
	if isCode(err, amqp091.PreconditionFailed) {
		err = t.withChannel(ctx, func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclarePassive(name, durableQueue, false, false, false, nil)
			return err
		})
	}
	if err != nil {
		return "", fmt.Errorf("declare retry queue %q: %w", name, err)
	}
	t.mu.Lock()
	t.retries[name] = time.Now()
	t.mu.Unlock()
	if t.onRetry != nil {
		t.onRetry(queue, name)
	}
	return name, nil
}

func (t *topology) forgetRetryQueue(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.retries, name)
}

// declareChannel declares what a subscription needs, in order, each call
// awaited: the dead-letter exchange and queue (as @moleculer/channels
// 0.1.8: a fanout exchange bound to the queue) plus the fanout exchange
// named like the dead-letter queue (the dead-letter queue as a channel,
// where the dead letters are published), the channel exchange, the group
// queue and its binding.
func declareChannel(ch *amqp091.Channel, sub *subscription) error {
	o := sub.opts
	if err := declareDeadLetter(ch, sub); err != nil {
		return err
	}
	if err := ch.ExchangeDeclare(sub.ch.Name, o.Exchange.Type, durable(o.Exchange.Durable), o.Exchange.AutoDelete, false, false, o.Exchange.Arguments); err != nil {
		return fmt.Errorf("declare exchange %q: %w", sub.ch.Name, err)
	}
	q := o.Queue
	if sub.asIs.Load() {
		if _, err := ch.QueueDeclarePassive(sub.queue, durable(q.Durable), q.AutoDelete, q.Exclusive, false, nil); err != nil {
			return fmt.Errorf("declare queue %q (passive): %w", sub.queue, err)
		}
	} else if _, err := ch.QueueDeclare(sub.queue, durable(q.Durable), q.AutoDelete, q.Exclusive, false, sub.gq.args); err != nil {
		return &queueMismatch{fmt.Errorf("declare queue %q: %w", sub.queue, err)}
	}
	if err := ch.QueueBind(sub.queue, o.BindingKey, sub.ch.Name, false, nil); err != nil {
		return fmt.Errorf("bind queue %q to %q: %w", sub.queue, sub.ch.Name, err)
	}
	return nil
}

// declareDeadLetter declares the dead-letter topology of a subscription
// (nothing when dead-lettering is off).
func declareDeadLetter(ch *amqp091.Channel, sub *subscription) error {
	o, dl := sub.opts, sub.ch.DeadLetter
	if dl.Enabled {
		dq := o.DeadLetterQueue
		if err := ch.ExchangeDeclare(dl.Exchange, "fanout", durable(o.Exchange.Durable), o.Exchange.AutoDelete, false, false, o.Exchange.Arguments); err != nil {
			return fmt.Errorf("declare dead-letter exchange %q: %w", dl.Exchange, err)
		}
		if _, err := ch.QueueDeclare(dl.Queue, durable(dq.Durable), dq.AutoDelete, dq.Exclusive, false, dq.Arguments); err != nil {
			return fmt.Errorf("declare dead-letter queue %q: %w", dl.Queue, err)
		}
		if err := ch.QueueBind(dl.Queue, "", dl.Exchange, false, nil); err != nil {
			return fmt.Errorf("bind dead-letter queue %q to %q: %w", dl.Queue, dl.Exchange, err)
		}
		if dl.Exchange != dl.Queue {
			if err := ch.ExchangeDeclare(dl.Queue, "fanout", durable(o.Exchange.Durable), o.Exchange.AutoDelete, false, false, o.Exchange.Arguments); err != nil {
				return fmt.Errorf("declare exchange %q: %w", dl.Queue, err)
			}
			if err := ch.QueueBind(dl.Queue, "", dl.Queue, false, nil); err != nil {
				return fmt.Errorf("bind dead-letter queue %q to %q: %w", dl.Queue, dl.Queue, err)
			}
		}
	}
	return nil
}

// queueMismatch wraps the failed declaration of a group queue.
type queueMismatch struct{ err error }

func (e *queueMismatch) Error() string { return e.err.Error() }
func (e *queueMismatch) Unwrap() error { return e.err }

// groupQueue is how a subscription declares its group queue.
type groupQueue struct {
	args amqp091.Table
	// typ is QueueQuorum or QueueClassic (any type but quorum counts as
	// classic: the adapter counts deliveries itself).
	typ string
	// explicit: the options chose the type (an existing queue of another
	// type is then an error, not used as it is).
	explicit bool
	// atLeastOnce: the adapter added x-dead-letter-strategy at-least-once
	// and x-overflow reject-publish (RabbitMQ 3.10+).
	atLeastOnce bool
}

// classicOnly lists the queue arguments quorum queues refuse.
var classicOnly = []string{"x-max-priority", "x-queue-mode", "x-queue-version", "x-queue-master-locator"}

// needsClassic reports queue options that only a classic queue takes.
func needsClassic(q QueueOptions) bool {
	if !durable(q.Durable) || q.Exclusive || q.AutoDelete {
		return true
	}
	for _, k := range classicOnly {
		if _, ok := q.Arguments[k]; ok {
			return true
		}
	}
	return false
}

// maxDeliveries is the channel's bound on deliveries (the kit's rule).
func maxDeliveries(p broker.RetryPolicy) int {
	if p.MaxDeliveries > 0 {
		return p.MaxDeliveries
	}
	return p.MaxRetries + 1 + broker.DefaultExtraDeliveries
}

// planGroupQueue decides the type and arguments of a channel's group queue.
// A quorum queue gets x-delivery-limit = the channel's MaxDeliveries and,
// with dead-lettering on, x-dead-letter-exchange = the exchange named like
// the dead-letter queue: a message delivered more often than that without
// being settled (one the client library cannot even read, which closes the
// connection on every delivery) is dead-lettered by RabbitMQ itself. An
// x-delivery-limit or x-dead-letter-exchange in the options is kept. A
// quorum queue with a dead-letter exchange gets x-dead-letter-strategy
// at-least-once and x-overflow reject-publish, unless the options set
// either.
func planGroupQueue(o ChannelOptions, ch *broker.Channel) (groupQueue, error) {
	q := o.Queue
	g := groupQueue{args: q.Arguments}
	switch t, set := q.Arguments["x-queue-type"]; {
	case set:
		s, _ := valueString(t)
		g.typ, g.explicit = s, true
	case o.QueueType != "":
		g.typ, g.explicit = o.QueueType, true
	case needsClassic(q):
		g.typ = QueueClassic
	default:
		g.typ = QueueQuorum
	}
	if g.typ != QueueQuorum {
		if g.typ != QueueClassic && g.typ != "" {
			// A stream or another type the user asked for: declared as
			// asked; retries and counting work as on a classic queue.
			return g, nil
		}
		g.typ = QueueClassic
		return g, nil
	}
	if needsClassic(q) {
		return g, fmt.Errorf("%w: amqp: a quorum queue must be durable, not exclusive, not auto-deleted, without %s: set QueueType %q for these options",
			broker.ErrInvalidOption, strings.Join(classicOnly, ", "), QueueClassic)
	}
	args := make(amqp091.Table, len(q.Arguments)+3)
	for k, v := range q.Arguments {
		args[k] = v
	}
	args["x-queue-type"] = QueueQuorum
	if _, set := args["x-delivery-limit"]; !set {
		args["x-delivery-limit"] = int64(maxDeliveries(ch.Retry))
	}
	if _, set := args["x-dead-letter-exchange"]; !set && ch.DeadLetter.Enabled {
		args["x-dead-letter-exchange"] = ch.DeadLetter.Queue
	}
	_, dlx := args["x-dead-letter-exchange"]
	_, strategy := args["x-dead-letter-strategy"]
	overflow, setOverflow := args["x-overflow"]
	if dlx && !strategy && (!setOverflow || overflow == "reject-publish") {
		// RabbitMQ dead-letters at most once by default (a dead letter lost
		// when the dead-letter queue does not confirm it); at-least-once
		// needs x-overflow reject-publish.
		args["x-dead-letter-strategy"] = "at-least-once"
		args["x-overflow"] = "reject-publish"
		g.atLeastOnce = true
	}
	g.args = args
	return g, nil
}

// isCode reports an AMQP error with the given reply code.
func isCode(err error, code int) bool {
	var e *amqp091.Error
	return errors.As(err, &e) && e.Code == code
}
