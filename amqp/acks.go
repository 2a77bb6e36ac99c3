package amqp

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/microchannels/channels/kit"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// acker acknowledges the deliveries of one consumer channel in as few
// frames as it can (each is a write to the socket, for us and for
// RabbitMQ, and on a quorum queue each basic.ack is a settle command in its
// Raft log). Acks are queued on a kit.Batcher and flushed together. A
// flush sends one basic.ack with multiple=true for the run of settled tags
// that starts at the lowest tag not settled yet; the acks of tags beyond a
// gap (a message still running) wait for the gap to close, which turns
// them into part of that multiple ack.
//
// Acks wait, in the run and beyond a gap, only while that costs no
// delivery: while at most hold of them wait, while the messages not
// settled plus the acks waiting leave part of the consumer's prefetch
// credit unused (a flush, or a delivery, that finds them filling it sends
// everything: RabbitMQ would stop delivering to the free handlers), and
// for at most AckHoldTime each. Then the multiple ack goes out, and the
// acks beyond a gap one by one; with hold 0 every ack goes out at once.
// Deliveries RabbitMQ sent that have not reached delivered yet are not
// counted: for them the credit can fill unseen until the next settle or
// AckHoldTime. An ack that follows a confirmed copy of its message (retry,
// keep, dead letter, hand-back, recount: ackNow) goes out with the next
// flush, in the run's multiple ack or on its own beyond a gap, so a crash
// cannot requeue both the original and its copy for longer than that
// flush takes; a nack of the lowest outstanding tag sends the run too.
// The held tags are kept in a list of their own (at most hold plus one
// flush of them), so the work of a flush does not grow with the settled
// tags that wait above a long-running message. close sends every ack
// still held.
//
// The consumer channel carries one consumer and no basic.get, so its
// delivery tags are 1, 2, 3, ...
type acker struct {
	ch acknowledger
	b  *kit.Batcher[uint64]
	// hold bounds the acks waiting to be sent (0: none wait), holdFor the
	// time each waits; credit is the consumer's prefetch count (0: not
	// known, not checked).
	hold    int
	holdFor time.Duration
	credit  int

	mu        sync.Mutex
	low       uint64          // lowest tag not settled yet
	done      map[uint64]bool // settled tags above low: true = the ack is still to send
	received  uint64          // highest tag delivered
	held      []uint64        // tags of done whose ack is still to send (beyond a gap)
	heldSince time.Time       // when the oldest of held was settled
	last      uint64          // highest tag below low whose ack is still to send
	unsent    int             // acks below low still to send, in one multiple ack up to last
	runSince  time.Time       // when the oldest of those was settled
	now       bool            // the next flush sends the run's multiple ack
	timer     *time.Timer     // wakes the flusher when the oldest waiting ack is due
	armed     bool            // timer is set and has not fired yet
	closing   bool            // close was called: nothing is held any more
}

// AckHoldTime bounds how long the ack of a settled message waits to join a
// multiple ack (beyond a gap: for an earlier delivery still running to
// finish) before it is sent.
const AckHoldTime = 5 * time.Millisecond

// wake is the item that asks the flusher to look at the held acks (no
// delivery has tag 0).
const wake = 0

// urgent marks the tag of an ackNow on the flusher's queue.
const urgent = 1 << 63

// delivered records the arrival of tag. When it fills the prefetch credit
// while acks wait, the flusher is woken to send them.
func (k *acker) delivered(tag uint64) {
	k.mu.Lock()
	k.received = max(k.received, tag)
	full := k.creditFullLocked()
	k.mu.Unlock()
	if full {
		k.b.TryAdd(wake)
	}
}

// creditFullLocked reports acks waiting while the messages not settled and
// those acks fill the consumer's prefetch credit (RabbitMQ delivers no
// more until an ack goes out).
func (k *acker) creditFullLocked() bool {
	waiting := k.unsent + len(k.held)
	return waiting > 0 && k.credit > 0 && k.outstandingLocked()+int64(waiting) >= int64(k.credit)
}

// outstanding counts the deliveries not settled yet.
func (k *acker) outstanding() int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.outstandingLocked()
}

func (k *acker) outstandingLocked() int64 {
	n := int64(k.received) - int64(k.low-1) - int64(len(k.done))
	return max(n, 0)
}

// acknowledger is what the acker needs of the consumer channel.
type acknowledger interface {
	Ack(tag uint64, multiple bool) error
	Nack(tag uint64, multiple, requeue bool) error
}

var _ acknowledger = (*amqp091.Channel)(nil)

// newAcker returns the acker of ch: at most batch acks per flush, at most
// hold acks waiting to be sent, on a consumer of prefetch count credit.
func newAcker(ch acknowledger, batch, hold, credit int) *acker {
	k := &acker{ch: ch, low: 1, done: map[uint64]bool{}, hold: max(hold, 0), holdFor: AckHoldTime, credit: credit}
	k.b = kit.NewBatcher(batch, k.flush)
	k.b.Start()
	return k
}

// ack queues the ack of tag.
func (k *acker) ack(tag uint64) error { return k.b.Add(tag) }

// ackNow queues the ack of tag, to go out with the next flush (in the
// run's multiple ack, or on its own beyond a gap): its message was copied
// (the copy confirmed), and the original must not stay unacked any longer.
func (k *acker) ackNow(tag uint64) error { return k.b.Add(tag | urgent) }

// nack hands tag back to the queue at once. When it is the lowest
// outstanding tag and acks wait behind it, the flusher is woken to send
// them.
func (k *acker) nack(tag uint64) error {
	err := k.ch.Nack(tag, false, true)
	k.mu.Lock()
	k.settle(tag, false)
	gap := tag == k.low && len(k.held) > 0
	k.now = k.now || gap
	k.mu.Unlock()
	if gap {
		k.b.TryAdd(wake)
	}
	return err
}

// settle records tag as settled (needsAck: its ack is still to send).
func (k *acker) settle(tag uint64, needsAck bool) {
	if tag < k.low {
		return
	}
	if _, ok := k.done[tag]; ok {
		return // settled already: a second ack of a tag is never sent
	}
	k.done[tag] = needsAck
	if needsAck {
		if len(k.held) == 0 {
			k.heldSince = time.Now()
		}
		k.held = append(k.held, tag)
	}
}

func (k *acker) flush(tags []uint64) {
	k.mu.Lock()
	var urgents []uint64
	for _, t := range tags {
		if t&urgent != 0 {
			t &^= urgent
			urgents = append(urgents, t)
		}
		if t != wake {
			k.settle(t, true)
		}
	}
	for {
		needsAck, ok := k.done[k.low]
		if !ok {
			break
		}
		if needsAck {
			if k.unsent == 0 {
				k.runSince = k.heldSince // it waited in held: no later than the oldest there
			}
			k.last = k.low
			k.unsent++
		}
		delete(k.done, k.low)
		k.low++
	}
	// The held tags below low are now part of the run.
	kept := k.held[:0]
	for _, t := range k.held {
		if t >= k.low {
			kept = append(kept, t)
		}
	}
	clear(k.held[len(kept):])
	k.held = kept
	var (
		last   uint64
		single []uint64
	)
	// An urgent ack goes out now: in the run's multiple ack, or on its own
	// when a gap is still below it.
	for _, u := range urgents {
		if u < k.low {
			k.now = true
		} else if k.done[u] {
			k.done[u] = false
			k.held = slices.DeleteFunc(k.held, func(t uint64) bool { return t == u })
			single = append(single, u)
		}
	}

	now := time.Now()
	waiting := k.unsent + len(k.held)
	full := k.creditFullLocked()
	if k.unsent > 0 && (waiting > k.hold || full || k.closing || k.now || now.Sub(k.runSince) >= k.holdFor) {
		last, k.last, k.unsent = k.last, 0, 0
	}
	if len(k.held) > 0 && (len(k.held) > k.hold || full || k.closing || now.Sub(k.heldSince) >= k.holdFor) {
		single = append(single, k.held...)
		for _, t := range single {
			k.done[t] = false
		}
		k.held = k.held[:0]
		slices.Sort(single)
	}
	k.now = false
	if (k.unsent > 0 || len(k.held) > 0) && !k.armed {
		oldest := k.heldSince
		if k.unsent > 0 && (len(k.held) == 0 || k.runSince.Before(oldest)) {
			oldest = k.runSince
		}
		k.armed = true
		if wait := k.holdFor - now.Sub(oldest); k.timer == nil {
			k.timer = time.AfterFunc(wait, k.kick)
		} else {
			k.timer.Reset(wait)
		}
	}
	k.mu.Unlock()
	if last > 0 {
		_ = k.ch.Ack(last, true)
	}
	for _, t := range single {
		_ = k.ch.Ack(t, false)
	}
}

// kick has the flusher look at the held acks. When the queue is full a
// flush is coming anyway (and sets the timer again if it has to); after
// close there is nothing to do.
func (k *acker) kick() {
	k.mu.Lock()
	k.armed = false
	k.mu.Unlock()
	k.b.TryAdd(wake)
}

// close sends the queued acks and the held ones (bounded by ctx).
func (k *acker) close(ctx context.Context) error {
	k.mu.Lock()
	k.closing = true
	if k.timer != nil {
		k.timer.Stop()
	}
	k.mu.Unlock()
	// A flush after closing sends what is held: this one, or the one of
	// the acks filling the queue.
	k.b.TryAdd(wake)
	return k.b.Close(ctx)
}
