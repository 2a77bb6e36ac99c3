package kafka

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// The producer writes sends with no lingering: a send to an idle partition
// is written at once in a produce request of its own, and the sends that
// arrive while a partition's request is in flight are written together in
// the next one. A lone message waits for no batch timer (kafka-go's Writer
// always waits BatchTimeout for a batch to fill, and timers under a
// millisecond are not kept on every host), and concurrent senders share
// requests as much as the broker's round trip allows.

// DefaultWriteTimeout bounds one produce request, its retries included.
const DefaultWriteTimeout = 30 * time.Second

// writeAttempts is how many times a produce request is tried on a
// transient error (a partition moving to a new leader).
const writeAttempts = 3

type queueKey struct {
	topic     string
	partition int
	acks      Acks
	comp      Compression
}

// send is one message waiting for its produce request.
type send struct {
	key, value []byte
	headers    []kafkago.Header
	done       chan error // buffered: the result, once
}

// queue holds the sends of one partition, acknowledgement level and
// compression; one request of them is in flight at a time, which keeps the
// partition's order.
type queue struct {
	key     queueKey
	c       *conn
	max     int
	mu      sync.Mutex
	waiting []*send
	flowing bool // a writer goroutine is draining the queue
}

func (c *conn) queue(k queueKey, maxBatch int) *queue {
	if q, ok := c.queues.Load(k); ok {
		return q.(*queue)
	}
	q, _ := c.queues.LoadOrStore(k, &queue{key: k, c: c, max: maxBatch})
	return q.(*queue)
}

// add queues sends and makes sure a writer drains the queue.
func (q *queue) add(ss ...*send) {
	q.mu.Lock()
	q.waiting = append(q.waiting, ss...)
	start := !q.flowing
	q.flowing = true
	q.mu.Unlock()
	if start {
		go q.flow()
	}
}

// flow writes what waits, a request at a time, until the queue is empty.
func (q *queue) flow() {
	for {
		q.mu.Lock()
		n := min(len(q.waiting), q.max)
		if n == 0 {
			q.flowing = false
			q.mu.Unlock()
			return
		}
		batch := make([]*send, n)
		copy(batch, q.waiting)
		rest := copy(q.waiting, q.waiting[n:])
		clear(q.waiting[rest:])
		q.waiting = q.waiting[:rest]
		q.mu.Unlock()
		q.write(batch)
	}
}

// write sends one produce request for batch and hands each send its result.
func (q *queue) write(batch []*send) {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultWriteTimeout)
	defer cancel()
	var res *kafkago.ProduceResponse
	var err error
	for attempt := 1; ; attempt++ {
		// The records are made for each attempt: their key and value are
		// readers, consumed by the attempt before.
		recs := make([]kafkago.Record, len(batch))
		for i, s := range batch {
			recs[i] = kafkago.Record{Key: bytesOrNil(s.key), Value: kafkago.NewBytes(s.value), Headers: s.headers}
		}
		res, err = q.c.client.Produce(ctx, &kafkago.ProduceRequest{
			Topic: q.key.topic, Partition: q.key.partition, RequiredAcks: q.key.acks.native(),
			Compression: q.key.comp.native(), Records: kafkago.NewRecordReader(recs...),
		})
		if err == nil && res.Error != nil {
			err = res.Error
		}
		if err == nil || attempt == writeAttempts || !retriable(err) {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt) * 50 * time.Millisecond):
		}
	}
	for i, s := range batch {
		e := err
		if e == nil && res != nil {
			e = res.RecordErrors[i]
		}
		s.done <- e
	}
}

// retriable tells the errors after which a produce request is tried again.
func retriable(err error) bool {
	var ne net.Error
	return transient(err) || errors.Is(err, kafkago.RequestTimedOut) || errors.Is(err, kafkago.NotEnoughReplicas) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// produce writes messages to topic and returns each one's result, waiting
// for them within ctx (a send whose ctx ends first reports ctx's error: its
// message may still be written).
func (a *Adapter) produce(ctx context.Context, c *conn, topic string, so []SendOptions, msgs []kafkago.Message) []error {
	parts, err := a.partitionsOf(ctx, c, topic)
	errs := make([]error, len(msgs))
	if err != nil {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	var bal kafkago.Murmur2Balancer
	byQueue := map[*queue][]*send{}
	sends := make([]*send, len(msgs))
	for i, m := range msgs {
		o := so[min(i, len(so)-1)]
		p := 0
		switch {
		case o.HasPartition:
			p = o.Partition
		case len(parts) > 1:
			p = bal.Balance(m, parts...)
		case len(parts) == 1:
			p = parts[0]
		}
		acks := o.Acks
		if acks == acksUnset {
			acks = a.acks
		}
		q := c.queue(queueKey{topic: topic, partition: p, acks: acks, comp: o.Compression}, a.batchSize)
		s := &send{key: m.Key, value: m.Value, headers: m.Headers, done: make(chan error, 1)}
		sends[i] = s
		byQueue[q] = append(byQueue[q], s)
	}
	for q, ss := range byQueue {
		q.add(ss...)
	}
	for i, s := range sends {
		select {
		case errs[i] = <-s.done:
		case <-ctx.Done():
			errs[i] = ctx.Err()
		}
	}
	return errs
}

// partitionsOf returns the partition ids of topic, learnt when the topic
// was ensured.
func (a *Adapter) partitionsOf(ctx context.Context, c *conn, topic string) ([]int, error) {
	if v, ok := c.topics.Load(topic); ok {
		if ids, ok := v.([]int); ok {
			return ids, nil
		}
	}
	ids, err := a.partitions(ctx, c, topic, true)
	if err != nil {
		return nil, err
	}
	c.topics.Store(topic, ids)
	return ids, nil
}
