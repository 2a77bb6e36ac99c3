package amqp

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/microchannels/channels/kit"

	"github.com/microchannels/channels/broker"
)

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
	if dl, ok := ctx.Deadline(); ok {
		s.handBacksBy.CompareAndSwap(0, handBacksDeadline(dl).UnixNano())
	}
	return s.Consumer.Drain(ctx, kit.DrainHooks{
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
			// until handBacksDeadline to do it before the channel closes,
			// and so do the queued acks; the channel's close gets until
			// the kit stops waiting for Finish (see finishDeadlines).
			by, closeBy := finishDeadlines(ctx, time.Now())
			gctx, cancel := context.WithDeadline(context.Background(), by)
			defer cancel()
			cctx, cancelClose := context.WithDeadline(context.Background(), closeBy)
			defer cancelClose()
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
			if k != nil && k.close(gctx) != nil {
				// The queued acks go out before the channel closes: a
				// channel.close sent while they are written would have
				// RabbitMQ requeue messages that were handled.
				if err := k.close(cctx); err != nil {
					if ch != nil {
						go func() {
							_ = k.close(context.Background())
							_ = ch.Close()
						}()
					}
					return fmt.Errorf("channels/amqp: close consumer channel: the queued acknowledgements were not written in time; the channel closes once they are: %w", err)
				}
			}
			if ch != nil {
				// Anything still unacked (a handler cut by the deadline) is
				// requeued by the broker with the channel.
				if err := closeChannel(cctx, ch); err != nil {
					return fmt.Errorf("channels/amqp: close consumer channel: %w", err)
				}
			}
			return nil
		},
	})
}

// finishDeadlines returns when the hand-backs and queued acks of a drain's
// Finish that starts at now must end (by) and when the consumer channel's
// close must (closeBy): without a deadline, DefaultOpTimeout from now for
// both; with a deadline dl, handBacksDeadline(dl) and kit.FinishBy(dl)
// (closeMargin apart), but never less than releaseGrace from now for the
// hand-backs and acks and closeMargin after that for the close: a drain
// whose context had already ended (Close with an expired context) still
// sends its queued acks before the channel closes.
func finishDeadlines(ctx context.Context, now time.Time) (by, closeBy time.Time) {
	dl, ok := ctx.Deadline()
	if !ok {
		by = now.Add(DefaultOpTimeout)
		return by, by
	}
	by = later(handBacksDeadline(dl), now.Add(releaseGrace))
	return by, later(kit.FinishBy(dl), by.Add(closeMargin))
}

// handBacksDeadline is how long the hand-backs of a drain with deadline dl
// (and the queued acks) may go on: until closeMargin before the kit stops
// waiting for Finish (kit.FinishBy), which leaves the consumer channel the
// time to close.
func handBacksDeadline(dl time.Time) time.Time {
	return kit.FinishBy(dl).Add(-closeMargin)
}

// closeMargin is the part of the drain's last steps kept for closing the
// consumer channel after the hand-backs.
const closeMargin = 15 * time.Millisecond

// releaseGrace is the least time the last steps of a drain's Finish get
// for the pending hand-backs and the queued acks, even when the drain's
// context had already ended (see finishDeadlines).
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
