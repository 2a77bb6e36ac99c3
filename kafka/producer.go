package kafka

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/microchannels/channels/broker"
)

// The producer writes sends with no lingering: a send to an idle partition
// is written at once, and the sends that arrive while a partition's request
// is in flight are written together in the next one. The partitions ready
// at the same time that have the same leader share one produce request
// (sender.go), as the Java client does. A lone message waits for no batch
// timer (kafka-go's Writer always waits BatchTimeout for a batch to fill,
// and timers under a millisecond are not kept on every host), and
// concurrent senders share requests as much as the broker's round trip
// allows.

// DefaultWriteTimeout bounds one produce request, its retries included.
const DefaultWriteTimeout = 30 * time.Second

// writeAttempts is how many times a partition's messages are tried on a
// transient error (a partition moving to a new leader, a new topic whose
// leaders are being elected), writeBackoff the wait before each new try:
// about 3.5 s in all, within DefaultWriteTimeout. A partition has one
// request in flight at a time, so a try again keeps its order.
const writeAttempts = 8

var writeBackoff = broker.ExponentialBackoff{Initial: 50 * time.Millisecond, Max: time.Second, Multiplier: 2}

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
	call       *call // where its result goes
	i          int   // its index in call
}

// call collects the results of the messages of one produce call.
type call struct {
	mu        sync.Mutex
	errs      []error
	set       []bool // errs[i] is the result of message i
	left      int
	abandoned bool          // the caller's ctx ended: late results are dropped
	done      chan struct{} // closed when left reaches 0
}

// finish records the results of ss (err for all of them, or the per-record
// errors of recErrs when err is nil).
func finish(ss []*send, err error, recErrs map[int]error) {
	for i, s := range ss {
		e := err
		if e == nil {
			e = recErrs[i]
		}
		c := s.call
		c.mu.Lock()
		if !c.abandoned {
			c.errs[s.i], c.set[s.i] = e, true
			c.left--
			if c.left == 0 {
				close(c.done)
			}
		}
		c.mu.Unlock()
	}
}

// queue holds the sends of one partition, acknowledgement level and
// compression; one request of them is in flight at a time, which keeps the
// partition's order, also when a request is tried again.
type queue struct {
	key     queueKey
	c       *conn
	max     int
	mu      sync.Mutex
	waiting []*send
	busy    bool // listed ready in the sender, or a request of it in flight
}

func (c *conn) queue(k queueKey, maxBatch int) *queue {
	if q, ok := c.queues.Load(k); ok {
		return q.(*queue)
	}
	q, _ := c.queues.LoadOrStore(k, &queue{key: k, c: c, max: maxBatch})
	return q.(*queue)
}

// add queues sends and tells whether the queue was idle: the caller then
// lists it ready in its sender.
func (q *queue) add(ss ...*send) bool {
	q.mu.Lock()
	q.waiting = append(q.waiting, ss...)
	idle := !q.busy
	q.busy = true
	q.mu.Unlock()
	return idle
}

// take removes the next request's sends (at most max) from the queue,
// which stays busy until settle.
func (q *queue) take() []*send {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := min(len(q.waiting), q.max)
	batch := make([]*send, n)
	copy(batch, q.waiting)
	rest := copy(q.waiting, q.waiting[n:])
	clear(q.waiting[rest:])
	q.waiting = q.waiting[:rest]
	return batch
}

// settle ends the queue's request: the queue is listed ready again when
// sends wait, idle otherwise.
func (q *queue) settle() {
	q.mu.Lock()
	again := len(q.waiting) > 0
	q.busy = again
	q.mu.Unlock()
	if again {
		q.c.sender(q.key.acks).ready(q)
	}
}

// write sends batch in produce requests of the queue's partition alone,
// from attempt first on, and hands each send its result.
func (q *queue) write(batch []*send, first int) {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultWriteTimeout)
	defer cancel()
	var res *kafkago.ProduceResponse
	var err error
	for attempt := first; ; attempt++ {
		if attempt > 1 {
			select {
			case <-ctx.Done():
			case <-time.After(writeBackoff.Delay(attempt - 1)):
			}
		}
		res, err = q.c.client.Produce(ctx, &kafkago.ProduceRequest{
			Topic: q.key.topic, Partition: q.key.partition, RequiredAcks: q.key.acks.native(),
			Compression: q.key.comp.native(), Records: kafkago.NewRecordReader(records(batch)...),
		})
		if err == nil && res != nil && res.Error != nil {
			err = res.Error
		}
		if err == nil || attempt >= writeAttempts || !retriable(err) || ctx.Err() != nil {
			break
		}
	}
	var recErrs map[int]error
	if res != nil {
		recErrs = res.RecordErrors
	}
	finish(batch, err, recErrs)
}

// records makes the records of batch; they are made for each attempt: their
// key and value are readers, consumed by the attempt before.
func records(batch []*send) []kafkago.Record {
	recs := make([]kafkago.Record, len(batch))
	for i, s := range batch {
		recs[i] = kafkago.Record{Key: bytesOrNil(s.key), Value: kafkago.NewBytes(s.value), Headers: s.headers}
	}
	return recs
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
	if err != nil {
		errs := make([]error, len(msgs))
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	var bal kafkago.Murmur2Balancer
	cl := &call{errs: make([]error, len(msgs)), set: make([]bool, len(msgs)), left: len(msgs), done: make(chan struct{})}
	sends := make([]send, len(msgs))
	// the sends of one queue, in order; most calls have one queue
	var firstQ *queue
	var first []*send
	var more map[*queue][]*send
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
		s := &sends[i]
		*s = send{key: m.Key, value: m.Value, headers: m.Headers, call: cl, i: i}
		switch {
		case firstQ == nil || firstQ == q:
			firstQ, first = q, append(first, s)
		default:
			if more == nil {
				more = map[*queue][]*send{}
			}
			more[q] = append(more[q], s)
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	// the queues that were idle are listed together, so that a batch's
	// partitions share requests
	var idle []*queue
	if firstQ.add(first...) {
		idle = append(idle, firstQ)
	}
	for q, ss := range more {
		if q.add(ss...) {
			idle = append(idle, q)
		}
	}
	for len(idle) > 0 {
		acks := idle[0].key.acks
		var same, rest []*queue
		for _, q := range idle {
			if q.key.acks == acks {
				same = append(same, q)
			} else {
				rest = append(rest, q)
			}
		}
		c.sender(acks).ready(same...)
		idle = rest
	}
	select {
	case <-cl.done:
		return cl.errs
	case <-ctx.Done():
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.left == 0 {
		return cl.errs
	}
	cl.abandoned = true
	errs := make([]error, len(msgs))
	copy(errs, cl.errs)
	for i, set := range cl.set {
		if !set {
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
