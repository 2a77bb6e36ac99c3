package redis

import (
	"context"
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

// newAcker acknowledges in batches (broker.Batcher): one pipelined XACK per
// batch, with the deletion of the failure records of retried messages.
// After a drain closed it, late handlers do not ack: their messages stay
// pending and are delivered again.
func newAcker(s *subscription, batch int) *broker.Batcher[ackItem] {
	var b *broker.Batcher[ackItem]
	b = broker.NewBatcher(batch, func(items []ackItem) { s.xack(items, b.Stopping()) })
	return b
}

func (s *subscription) xack(items []ackItem, stopping <-chan struct{}) {
	ids := make([]string, len(items))
	for i, it := range items {
		ids[i] = it.id
	}
	retry := broker.Reconnect{Backoff: ackRetryBackoff}
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
		retry.Failed(stopping) // no wait once draining: the tries stay bounded
	}
}
