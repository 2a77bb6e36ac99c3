package amqp

import (
	"context"
	"sync"

	"github.com/microchannels/channels/kit"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// acker acknowledges the deliveries of one consumer channel in as few
// frames as it can (each is a write to the socket, for us and for
// RabbitMQ). Acks are queued on a kit.Batcher: a lone ack goes out at
// once, and the acks queued meanwhile are flushed together. A flush sends
// one basic.ack with multiple=true for the run of settled tags that starts
// at the lowest tag not settled yet, and acks the tags beyond a gap (a
// message still running) one by one, so a slow message never holds back
// the prefetch credit of the others. Nacks (hand-backs) go out at once.
//
// The consumer channel carries one consumer and no basic.get, so its
// delivery tags are 1, 2, 3, ...
type acker struct {
	ch acknowledger
	b  *kit.Batcher[uint64]

	mu       sync.Mutex
	low      uint64          // lowest tag not settled yet
	done     map[uint64]bool // settled tags above low: true = the ack is still to send
	received uint64          // highest tag delivered
}

// delivered records the arrival of tag.
func (k *acker) delivered(tag uint64) {
	k.mu.Lock()
	k.received = max(k.received, tag)
	k.mu.Unlock()
}

// outstanding counts the deliveries not settled yet.
func (k *acker) outstanding() int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := int64(k.received) - int64(k.low-1) - int64(len(k.done))
	return max(n, 0)
}

// acknowledger is what the acker needs of the consumer channel.
type acknowledger interface {
	Ack(tag uint64, multiple bool) error
	Nack(tag uint64, multiple, requeue bool) error
}

var _ acknowledger = (*amqp091.Channel)(nil)

func newAcker(ch acknowledger, batch int) *acker {
	k := &acker{ch: ch, low: 1, done: map[uint64]bool{}}
	k.b = kit.NewBatcher(batch, k.flush)
	k.b.Start()
	return k
}

// ack queues the ack of tag.
func (k *acker) ack(tag uint64) error { return k.b.Add(tag) }

// nack hands tag back to the queue at once.
func (k *acker) nack(tag uint64) error {
	err := k.ch.Nack(tag, false, true)
	k.mu.Lock()
	k.settle(tag, false)
	k.mu.Unlock()
	return err
}

// settle records tag as settled (needsAck: its ack is still to send).
func (k *acker) settle(tag uint64, needsAck bool) {
	if tag >= k.low {
		k.done[tag] = needsAck
	}
}

func (k *acker) flush(tags []uint64) {
	k.mu.Lock()
	for _, t := range tags {
		k.settle(t, true)
	}
	var last uint64
	for {
		needsAck, ok := k.done[k.low]
		if !ok {
			break
		}
		if needsAck {
			last = k.low
		}
		delete(k.done, k.low)
		k.low++
	}
	var single []uint64
	for _, t := range tags {
		if t >= k.low && k.done[t] {
			k.done[t] = false
			single = append(single, t)
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

// close sends the queued acks (bounded by ctx).
func (k *acker) close(ctx context.Context) error { return k.b.Close(ctx) }
