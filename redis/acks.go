package redis

import (
	"context"
	"sync"
	"time"

	"github.com/microchannels/channels/broker"
)

// ackRetryBackoff paces the retries of a failed XACK.
var ackRetryBackoff = broker.ExponentialBackoff{Initial: 100 * time.Millisecond, Max: time.Second, Multiplier: 2}

// ackRetries bounds the tries of one XACK batch; unacked messages are
// redelivered after MinIdleTime, so nothing is lost when they all fail.
const ackRetries = 5

type ackItem struct {
	id string
	// record: a failure record may exist for this message; delete it too.
	record bool
}

// acker acknowledges in batches: whatever is queued goes in one pipelined
// XACK (with the failure records to delete), so a lone message is acked at
// once and a burst shares round trips.
type acker struct {
	s     *subscription
	batch int
	q     chan ackItem
	stop  chan struct{} // closed by close: flush and return
	done  chan struct{}

	mu     sync.RWMutex
	closed bool
}

func newAcker(s *subscription, batch int) *acker {
	return &acker{s: s, batch: batch, q: make(chan ackItem, 4*batch), stop: make(chan struct{}), done: make(chan struct{})}
}

func (k *acker) start() { go k.loop() }

// add queues an ack. After close (a drain that timed out, late handlers)
// nothing is acked: the message stays pending and is delivered again.
func (k *acker) add(id string, record bool) error {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.closed {
		return broker.ErrClosed
	}
	select {
	case k.q <- ackItem{id, record}:
		return nil
	case <-k.stop:
		return broker.ErrClosed
	}
}

func (k *acker) loop() {
	defer close(k.done)
	items := make([]ackItem, 0, k.batch)
	for {
		var it ackItem
		select {
		case it = <-k.q:
		case <-k.stop:
			// Flush what is queued, then leave.
			for {
				select {
				case it = <-k.q:
					items = append(items, it)
					if len(items) == k.batch {
						k.flush(items)
						items = items[:0]
					}
				default:
					if len(items) > 0 {
						k.flush(items)
					}
					return
				}
			}
		}
		items = append(items[:0], it)
	more:
		for len(items) < k.batch {
			select {
			case it = <-k.q:
				items = append(items, it)
			default:
				break more
			}
		}
		k.flush(items)
	}
}

func (k *acker) flush(items []ackItem) {
	s := k.s
	ids := make([]string, len(items))
	for i, it := range items {
		ids[i] = it.id
	}
	var retry broker.Reconnect
	retry.Backoff = ackRetryBackoff
	for try := 1; ; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), DefaultOpTimeout)
		pipe := s.c.Pipeline()
		pipe.XAck(ctx, s.ch.Name, s.ch.Group, ids...)
		for _, it := range items {
			if it.record {
				pipe.Del(ctx, s.recs.key(it.id))
			}
		}
		_, err := pipe.Exec(ctx)
		cancel()
		if err == nil {
			return
		}
		if try >= ackRetries {
			s.log.Error("channels/redis: ack failed; the messages will be delivered again", "channel", s.ch.Name,
				"count", len(ids), "error", err)
			return
		}
		retry.Failed(k.stop) // no wait once draining: the tries stay bounded
	}
}

// close flushes the queued acks, bounded by ctx; later adds are refused.
func (k *acker) close(ctx context.Context) error {
	k.mu.Lock()
	if !k.closed {
		k.closed = true
		close(k.stop)
	}
	k.mu.Unlock()
	select {
	case <-k.done:
		return nil
	case <-ctx.Done():
		return broker.ErrDrainTimeout
	}
}
