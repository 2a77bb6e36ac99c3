package redis

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/microchannels/channels/kit"

	goredis "github.com/redis/go-redis/v9"

	"github.com/microchannels/channels/broker"
)

// ackRetryBackoff paces the retries of a failed XACK.
var ackRetryBackoff = broker.ExponentialBackoff{Initial: 100 * time.Millisecond, Max: time.Second, Multiplier: 2}

// ackRetries bounds the tries of one XACK batch once the subscription is
// stopping, or when Redis refuses it (an error reply): unacked messages are
// redelivered, so nothing is lost when they all fail. While the
// subscription runs, an XACK that fails for the connection (a broker
// restart) is retried until it succeeds, its messages held meanwhile.
const ackRetries = 5

// ackCarryWait bounds how long an acknowledgement left for the fetch loop's
// next read may wait before the flusher sends it itself.
const ackCarryWait = 10 * time.Millisecond

// ackCarryWindow: an acknowledgement that comes while the fetch loop's read
// has been blocked longer than this is sent at once (nothing flows: the read
// may block until ReadTimeout); one that comes sooner waits for the next
// read, which the message that ends the blocked read is on its way to
// start.
const ackCarryWindow = time.Millisecond

type ackItem struct {
	id string
	// record: a failure record may exist for this message; delete it too.
	record bool
}

// acker acknowledges in batches. When the fetch loop reads on a client of
// the adapter's own and messages flow, acknowledgements wait for its next
// XREADGROUP and go in the same pipeline: no round trip of their own. A
// flusher (kit.Batcher) sends the others at once (the read has been
// blocked for more than ackCarryWindow: nothing flows), those that waited
// ackCarryWait, and all of them on a client of the caller's: one pipelined
// XACK per batch, with the deletion of the failure records of retried
// messages. After a drain closed it, late handlers do not ack:
// their messages stay pending and are delivered again.
type acker struct {
	b    *kit.Batcher[ackItem]
	xack func(items []ackItem, stopping <-chan struct{})

	mu      sync.Mutex
	carry   bool          // the fetch loop takes the pending acks with its reads
	reading time.Time     // when the fetch loop's blocking read started (zero: not in one)
	window  time.Duration // ackCarryWindow
	closed  bool
	pending []ackItem
	timer   *time.Timer // hands pending acks to the flusher after ackCarryWait
}

// newAcker returns an acker whose flusher sends batches with xack.
func newAcker(batch int, xack func(items []ackItem, stopping <-chan struct{})) *acker {
	a := &acker{window: ackCarryWindow, xack: xack}
	a.b = kit.NewBatcher(batch, func(items []ackItem) { xack(items, a.b.Stopping()) })
	a.timer = time.AfterFunc(time.Hour, a.flushPending)
	a.timer.Stop()
	return a
}

// Start runs the flusher.
func (a *acker) Start() { a.b.Start() }

// Add acknowledges one message.
func (a *acker) Add(it ackItem) error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return broker.ErrClosed
	}
	if a.carry && (a.reading.IsZero() || time.Since(a.reading) < a.window) {
		a.pending = append(a.pending, it)
		if len(a.pending) == 1 {
			a.timer.Reset(ackCarryWait)
		}
		a.mu.Unlock()
		return nil
	}
	a.mu.Unlock()
	return a.b.Add(it)
}

// carryWithReads makes the fetch loop's reads carry the acknowledgements.
func (a *acker) carryWithReads() {
	a.mu.Lock()
	a.carry = true
	a.mu.Unlock()
}

// take hands the pending acks to the fetch loop's read, which starts.
func (a *acker) take() []ackItem {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reading = time.Now()
	items := a.pending
	a.pending = nil
	if len(items) > 0 {
		a.timer.Stop()
	}
	return items
}

// readEnded records that the fetch loop's read returned.
func (a *acker) readEnded() {
	a.mu.Lock()
	a.reading = time.Time{}
	a.mu.Unlock()
}

// giveBack hands acks the fetch loop could not send to the flusher. Once a
// drain closed the flusher (its deadline passed during the fetch loop's
// last read) they are sent here, with no wait between the tries.
func (a *acker) giveBack(items []ackItem) {
	var late []ackItem
	for _, it := range items {
		if err := a.b.Add(it); err != nil {
			late = append(late, it)
		}
	}
	if len(late) > 0 {
		a.xack(late, closedStop)
	}
}

// closedStop is a closed stopping channel: tries without waiting.
var closedStop = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// flushPending hands the pending acks to the flusher. It holds mu while it
// does, so that Close, which takes mu before closing the flusher, cannot
// close it between the taking and the handing (the acks would be lost).
func (a *acker) flushPending() {
	a.mu.Lock()
	defer a.mu.Unlock()
	items := a.pending
	a.pending = nil
	a.giveBack(items)
}

// Close refuses new acks, flushes the pending ones and waits for the
// flusher, bounded by ctx.
func (a *acker) Close(ctx context.Context) error {
	a.timer.Stop()
	a.mu.Lock()
	a.closed, a.carry = true, false
	items := a.pending
	a.pending = nil
	a.giveBack(items)
	a.mu.Unlock()
	return a.b.Close(ctx)
}

// queueAck adds the XACK of items (and the deletion of their failure
// records) to a pipeline.
func (s *subscription) queueAck(ctx context.Context, pipe goredis.Pipeliner, items []ackItem) *goredis.IntCmd {
	cmd := pipe.XAck(ctx, s.ch.Name, s.ch.Group, ackIDs(items)...)
	for _, it := range items {
		if it.record {
			pipe.Del(ctx, s.recs.key(it.id))
		}
	}
	return cmd
}

func (s *subscription) xack(items []ackItem, stopping <-chan struct{}) {
	retry := kit.Reconnect{Backoff: ackRetryBackoff}
	for try := 1; ; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), DefaultOpTimeout)
		pipe := s.c.Pipeline()
		s.queueAck(ctx, pipe, items)
		_, err := pipe.Exec(ctx)
		cancel()
		if err == nil {
			s.acked(items)
			return
		}
		var reply goredis.Error
		if try >= ackRetries && (errors.As(err, &reply) || isClosed(stopping)) {
			s.held.remove(ackIDs(items)...)
			s.log.Error("channels/redis: ack failed; the messages will be delivered again", "channel", s.ch.Name,
				"count", len(items), "error", broker.Redact(err.Error()))
			return
		}
		if try == ackRetries {
			s.log.Warn("channels/redis: ack failing, retrying until Redis answers; the messages stay held",
				"channel", s.ch.Name, "count", len(items), "error", broker.Redact(err.Error()))
		}
		retry.Failed(stopping) // no wait once draining: the tries stay bounded
	}
}

// acked forgets acknowledged messages: no more heartbeats.
func (s *subscription) acked(items []ackItem) { s.held.remove(ackIDs(items)...) }

func ackIDs(items []ackItem) []string {
	ids := make([]string, len(items))
	for i, it := range items {
		ids[i] = it.id
	}
	return ids
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
