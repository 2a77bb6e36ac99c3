package amqp

import (
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/microchannels/channels/kit"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels/broker"
)

var (
	_ broker.ChannelRemover = (*Adapter)(nil)
	_ broker.LagReporter    = (*Adapter)(nil)
)

// Subscribe declares the channel's topology (dead-letter exchange and
// queue, channel exchange, group queue and binding), each declaration
// awaited, on the AMQP channel the consumer will use, and returns a
// subscription that has not started consuming.
// prepareChannel validates ch and resolves its options and group queue, without
// the server.
func (a *Adapter) prepareChannel(ch *broker.Channel) (ChannelOptions, groupQueue, error) {
	opts, err := kit.PrepareChannel(ch, "amqp", a.chanOpts, kit.Overlay[ChannelOptions], nil)
	if err != nil {
		return opts, groupQueue{}, err
	}
	if f := ch.Start.From; f == broker.FromOldest || f == broker.FromTime {
		// A group is a queue bound to the channel's exchange: it holds
		// what is routed to it after the binding, and nothing of before.
		return opts, groupQueue{}, &broker.UnsupportedError{Adapter: a.Name(), Channel: ch.Name, Setting: "start position " + ch.Start.String(),
			Reason: "a RabbitMQ queue receives only the messages routed after it is bound (StartNewest, the default, is what a new group gets)"}
	}
	// The dead-letter queue takes the adapter-wide queue options, then its own.
	opts.DeadLetterQueue = kit.Overlay(a.chanOpts.Queue, opts.DeadLetterQueue)
	opts = opts.withDefaults()
	if ch.MaxInFlight > math.MaxUint16 {
		// basic.qos takes a 16-bit prefetch count: more would wrap (65,536
		// is 0, no limit at all).
		return opts, groupQueue{}, fmt.Errorf("%w: channel %q: amqp MaxInFlight must be <= %d (the prefetch count of basic.qos)",
			broker.ErrInvalidOption, ch.Name, math.MaxUint16)
	}
	gq, err := planGroupQueue(opts, ch)
	if err != nil {
		return opts, gq, fmt.Errorf("channel %q: %w", ch.Name, err)
	}
	return opts, gq, nil
}

// CheckChannel validates a channel declaration without a connection
// (broker.ChannelChecker): what Subscribe checks before it declares the
// queues.
func (a *Adapter) CheckChannel(ch *broker.Channel) error {
	c := *ch
	_, _, err := a.prepareChannel(&c)
	return err
}

func (a *Adapter) Subscribe(ctx context.Context, ch *broker.Channel) (broker.Subscription, error) {
	if err := a.state.Check(); err != nil {
		return nil, err
	}
	l := a.live.Load()
	if l == nil {
		return nil, broker.ErrClosed
	}
	opts, gq, err := a.prepareChannel(ch)
	if err != nil {
		return nil, err
	}
	s := newSubscription(a, l, ch, opts, gq)
	cs, err := l.consuming(ctx)
	if err != nil {
		return nil, fmt.Errorf("channels/amqp: subscribe %q: %w", ch.Name, err)
	}
	s.cs = cs
	c := cs.current()
	if c == nil {
		return nil, fmt.Errorf("channels/amqp: subscribe %q: %w", ch.Name, errDown)
	}
	s.gq = forServer(s.gq, serverVersion(c))
	amqpCh, err := s.openChannel(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("channels/amqp: subscribe %q (group %q): %w", ch.Name, ch.Group, err)
	}
	if afterSubscribeOpen != nil {
		afterSubscribeOpen()
	}
	// Close takes the live away under a.mu before it drains the
	// subscriptions: one added under a.mu while the live is still l is
	// drained by that Close; after it, the subscription is refused.
	a.mu.Lock()
	if a.live.Load() != l {
		a.mu.Unlock()
		go func() { _ = amqpCh.Close() }() // in the background: the link may be frozen
		return nil, fmt.Errorf("channels/amqp: subscribe %q: %w", ch.Name, broker.ErrClosed)
	}
	s.setChannel(amqpCh)
	a.subs.Add(s)
	a.mu.Unlock()
	l.remember(s)
	a.groupsMu.Lock()
	if a.groups == nil {
		a.groups = map[string]map[string]bool{}
	}
	if a.groups[ch.Name] == nil {
		a.groups[ch.Name] = map[string]bool{}
	}
	a.groups[ch.Name][ch.Group] = true
	if dl := ch.DeadLetter; dl.Enabled {
		if a.deadLetters == nil {
			a.deadLetters = map[string]bool{}
		}
		if _, ok := a.deadLetters[dl.Exchange]; !ok {
			a.deadLetters[dl.Exchange] = false
		}
		a.deadLetters[dl.Queue] = true
		if dl.Exchange != dl.Queue {
			if a.dlExchanges == nil {
				a.dlExchanges = map[string]map[string]bool{}
			}
			for _, name := range []string{ch.Name, dl.Queue} {
				if a.dlExchanges[name] == nil {
					a.dlExchanges[name] = map[string]bool{}
				}
				a.dlExchanges[name][dl.Exchange] = true
			}
		}
	}
	a.groupsMu.Unlock()
	return s, nil
}

// afterSubscribeOpen, when set (by tests), runs in Subscribe once the
// subscription's channel is open.
var afterSubscribeOpen func()

// Declared returns the queues and exchanges this adapter declared for its
// subscriptions since New: the group queues with the retry queues declared
// for them, the dead-letter queues, and the exchanges of the channels and
// of the dead-letter queues (each dead-letter queue has an exchange named
// like it). It works before Connect and after Close, for tools and tests
// that delete what a run left behind.
func (a *Adapter) Declared() (queues, exchanges []string) {
	a.groupsMu.Lock()
	defer a.groupsMu.Unlock()
	for channel, groups := range a.groups {
		exchanges = append(exchanges, channel)
		for g := range groups {
			q := QueueName(channel, g)
			queues = append(queues, q)
			for rq := range a.retries[q] {
				queues = append(queues, rq)
			}
		}
	}
	for name, isQueue := range a.deadLetters {
		exchanges = append(exchanges, name)
		if isQueue {
			queues = append(queues, name)
		}
	}
	slices.Sort(queues)
	slices.Sort(exchanges)
	return slices.Compact(queues), slices.Compact(exchanges)
}

// RemoveChannel deletes what the adapter declared for channel: the queues
// of the groups this adapter subscribed to it since New (with the retry
// queues it declared for them), the queue named like the channel (a
// dead-letter queue removed as a channel), and the channel's exchange.
// Then the dead-letter exchanges (DeadLettering.ExchangeName, DEAD_LETTER
// by default) that this adapter's subscriptions to channel, or whose
// dead-letter queue channel is, declared since New are deleted if unused:
// RabbitMQ keeps one while any queue is bound to it (the dead-letter queue
// of another channel, of this adapter or of another process), and the
// removal of the last one deletes it.
// AMQP cannot list the queues bound to an exchange: remove the queues of
// groups this adapter never subscribed with RemoveGroup. Messages in the
// deleted queues are lost. The adapter's own consumers of a removed group
// stop (they are not resumed); their subscriptions still need their drain.
// Removing what does not exist is not an error.
func (a *Adapter) RemoveChannel(ctx context.Context, channel string) error {
	a.groupsMu.Lock()
	var groups []string
	for g := range a.groups[channel] {
		groups = append(groups, g)
	}
	a.groupsMu.Unlock()
	if err := a.RemoveGroup(ctx, channel, groups...); err != nil {
		return err
	}
	l, err := a.liveOrErr()
	if err != nil {
		return err
	}
	if err := a.deleteQueue(ctx, l, channel); err != nil {
		return fmt.Errorf("channels/amqp: remove %q: %w", channel, err)
	}
	err = l.topo.withChannel(ctx, func(ch *amqp091.Channel) error { return ch.ExchangeDelete(channel, false, false) })
	if err != nil && !isCode(err, amqp091.NotFound) {
		return fmt.Errorf("channels/amqp: remove %q: delete exchange: %w", channel, err)
	}
	l.topo.setExchange(channel, false)
	a.groupsMu.Lock()
	delete(a.groups, channel)
	var dlxs []string
	for x := range a.dlExchanges[channel] {
		if x != channel {
			dlxs = append(dlxs, x)
		}
	}
	a.groupsMu.Unlock()
	slices.Sort(dlxs)
	for _, x := range dlxs {
		gone, err := a.deleteUnusedExchange(ctx, l, x)
		if err != nil {
			return fmt.Errorf("channels/amqp: remove %q: %w", channel, err)
		}
		if gone {
			a.groupsMu.Lock()
			delete(a.dlExchanges[channel], x)
			if len(a.dlExchanges[channel]) == 0 {
				delete(a.dlExchanges, channel)
			}
			a.groupsMu.Unlock()
		}
	}
	return nil
}

// deleteUnusedExchange deletes exchange x unless a queue (or exchange) is
// bound to it (exchange.delete if-unused, which RabbitMQ refuses with a
// 406 that closes the AMQP channel: withChannel opens a fresh one per
// call). It reports whether x is gone (deleted, or missing).
func (a *Adapter) deleteUnusedExchange(ctx context.Context, l *live, x string) (bool, error) {
	err := l.topo.withChannel(ctx, func(ch *amqp091.Channel) error { return ch.ExchangeDelete(x, true, false) })
	switch {
	case err == nil || isCode(err, amqp091.NotFound):
		l.topo.setExchange(x, false)
		return true, nil
	case isCode(err, amqp091.PreconditionFailed):
		return false, nil // still bound: another dead-letter queue uses it
	default:
		return false, fmt.Errorf("delete dead-letter exchange %q: %w", x, err)
	}
}

// RemoveGroup deletes the queues of the given groups on channel
// ("<group>.<channel>") and the retry queues this adapter declared for
// them since New (the others expire by themselves: x-expires). Messages in
// them are lost. This adapter's consumers of those queues stop.
func (a *Adapter) RemoveGroup(ctx context.Context, channel string, groups ...string) error {
	l, err := a.liveOrErr()
	if err != nil {
		return err
	}
	for _, g := range groups {
		q := QueueName(channel, g)
		// This adapter's consumers of the queue stop: RabbitMQ cancels them
		// with the queue, and they do not declare it again.
		l.markRemoved(q)
		a.groupsMu.Lock()
		var rqs []string
		for rq := range a.retries[q] {
			rqs = append(rqs, rq)
		}
		a.groupsMu.Unlock()
		for _, rq := range rqs {
			if err := a.deleteQueue(ctx, l, rq); err != nil {
				return fmt.Errorf("channels/amqp: remove group %q of %q: %w", g, channel, err)
			}
			l.topo.forgetRetryQueue(rq)
		}
		a.groupsMu.Lock()
		delete(a.retries, q)
		a.groupsMu.Unlock()
		if err := a.deleteQueue(ctx, l, q); err != nil {
			return fmt.Errorf("channels/amqp: remove group %q of %q: %w", g, channel, err)
		}
		a.groupsMu.Lock()
		delete(a.groups[channel], g)
		a.groupsMu.Unlock()
	}
	return nil
}

// Purge deletes the messages ready in the queue of group on channel (with
// group "", in the queue named like the channel: a dead-letter queue) and
// returns how many. Messages delivered to a consumer and not acknowledged
// yet are not purged.
func (a *Adapter) Purge(ctx context.Context, channel, group string) (int, error) {
	l, err := a.liveOrErr()
	if err != nil {
		return 0, err
	}
	q := channel
	if group != "" {
		q = QueueName(channel, group)
	}
	var n int
	err = l.topo.withChannel(ctx, func(ch *amqp091.Channel) error {
		var err error
		n, err = ch.QueuePurge(q, false)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("channels/amqp: purge queue %q: %w", q, err)
	}
	return n, nil
}

// deleteQueue deletes queue q; a missing queue is not an error. (Quorum
// queues refuse if-unused and if-empty, with a connection error.)
func (a *Adapter) deleteQueue(ctx context.Context, l *live, q string) error {
	err := l.topo.withChannel(ctx, func(ch *amqp091.Channel) error {
		_, err := ch.QueueDelete(q, false, false, false)
		return err
	})
	if err != nil && !isCode(err, amqp091.NotFound) {
		return fmt.Errorf("delete queue %q: %w", q, err)
	}
	return nil
}

// noteRetry records a retry queue of queue (RemoveGroup deletes it).
func (a *Adapter) noteRetry(queue, retryQueue string) {
	a.groupsMu.Lock()
	defer a.groupsMu.Unlock()
	if a.retries == nil {
		a.retries = map[string]map[string]bool{}
	}
	if a.retries[queue] == nil {
		a.retries[queue] = map[string]bool{}
	}
	a.retries[queue][retryQueue] = true
}

// Lag reports the messages ready in the group queue (queue.declare passive:
// not delivered to any member yet) and, as Pending, the messages delivered
// to this adapter's consumers of the group and not settled yet (AMQP does
// not tell the unacknowledged messages of other connections).
func (a *Adapter) Lag(ctx context.Context, channel, group string) (broker.GroupLag, error) {
	l := a.live.Load()
	if l == nil {
		if err := a.state.Check(); err != nil {
			return broker.GroupLag{}, err
		}
		return broker.GroupLag{}, broker.ErrClosed
	}
	queue := QueueName(channel, group)
	var q amqp091.Queue
	err := l.topo.withChannel(ctx, func(ch *amqp091.Channel) error {
		var err error
		q, err = ch.QueueDeclarePassive(queue, false, false, false, false, nil)
		return err
	})
	if err != nil {
		return broker.GroupLag{}, fmt.Errorf("channels/amqp: queue %q: %w", queue, err)
	}
	return broker.GroupLag{Lag: int64(q.Messages), Pending: l.pending(queue)}, nil
}
