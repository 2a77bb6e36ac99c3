package kafka

import (
	"context"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/microchannels/channels/broker"
)

// handoverSpan bounds a partition's hand-over, from the end of its
// generation: the coordinator waits RebalanceTimeout for the member to
// rejoin, from a rebalance this member notices up to a HeartbeatInterval
// later; a quarter of it is kept for the rejoin itself.
func (s *subscription) handoverSpan() time.Duration {
	return max(s.opts.RebalanceTimeout*3/4-s.opts.HeartbeatInterval, 0)
}

// handoverWait is how long a hand-over waits for the partition's running
// messages: the commit that follows keeps a quarter of RebalanceTimeout.
func (s *subscription) handoverWait() time.Duration {
	return max(s.opts.RebalanceTimeout/2-s.opts.HeartbeatInterval, 0)
}

// close stops the held messages (they stay unsettled), wakes the reader and
// returns the retry copies it stopped, for handOver.
func (p *partition) close() (copies []*delivery) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	// A timer still listed has not started its message: stopped here, or
	// fired and waiting for p.mu, it finds itself unlisted and returns.
	for t, h := range p.timers {
		t.Stop()
		p.addHeld(h.d, -1)
		if h.copy {
			copies = append(copies, h.d)
		}
	}
	clear(p.timers)
	// The messages queued in lanes are read again by the next owner: they
	// take no read-ahead room.
	for _, q := range p.lanes {
		for _, d := range q {
			p.addHeld(d, -1)
		}
	}
	p.cond.Broadcast()
	return copies
}

// handOver publishes again, unchanged, the retry copies that were waiting
// for their backoff when the partition was handed over, and settles them
// once every in-sync replica has the new copy. Left unsettled, each would
// hold the commit position back, and the next owner would run again every
// message read after it. A copy that cannot be published stays unsettled:
// read again, not lost (when the write's outcome is unknown, the copy may
// also be in the topic: at-least-once).
func (p *partition) handOver(ctx context.Context, copies []*delivery) {
	if len(copies) == 0 {
		return
	}
	s := p.s
	so := make([]SendOptions, len(copies))
	msgs := make([]kafkago.Message, len(copies))
	for i, d := range copies {
		so[i] = SendOptions{Key: d.km.Key, Acks: AcksAll}
		msgs[i] = kafkago.Message{Key: d.km.Key, Value: d.km.Value, Headers: d.km.Headers}
	}
	ctx, cancel := context.WithTimeout(ctx, DefaultWriteTimeout)
	defer cancel()
	for i, err := range s.a.produce(ctx, s.c, s.ch.Name, so, msgs) {
		if err != nil {
			s.log.Warn("channels/kafka: handing over a retry copy failed; the partition's next owner reads it and what follows again",
				"channel", s.ch.Name, "partition", p.id, "error", broker.Redact(err.Error()))
			continue
		}
		p.settled(copies[i].km.Offset)
	}
}

// waitIdle waits until no message of the partition runs and no retry
// copy of it is being written, until ctx ends; it reports whether none
// does.
func (p *partition) waitIdle(ctx context.Context) bool {
	stop := context.AfterFunc(ctx, func() {
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	defer stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.busy() && ctx.Err() == nil {
		p.cond.Wait()
	}
	return !p.busy()
}

// busy tells whether a message of the partition runs or a retry copy of
// one is being written (p.mu held).
func (p *partition) busy() bool { return p.running > 0 || p.writing > 0 }
