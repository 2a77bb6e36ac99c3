package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/microchannels/channels/kit"

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

// DefaultSendBuffer bounds the bytes (keys, values and headers) of the
// sends of one adapter waiting for their produce request or in flight: a
// send that finds it full waits for room within its ctx (while a
// partition's leader does not answer, sends fail by their deadline instead
// of piling up). A message larger than the buffer is let through alone.
const DefaultSendBuffer = 32 << 20

// The states of a send: waiting in its queue, taken into a produce request,
// or taken out of the queue by its caller, whose ctx ended first (it is
// never written).
const (
	sendQueued int32 = iota
	sendTaken
	sendWithdrawn
)

// send is one message waiting for its produce request.
type send struct {
	key, value []byte
	headers    []kafkago.Header
	call       *call // where its result goes
	i          int   // its index in call
	size       int64 // what it holds of the send buffer
	state      atomic.Int32
}

// call collects the results of the messages of one produce call.
type call struct {
	mu   sync.Mutex
	errs []error
	set  []bool // errs[i] is the result of message i
	left int
	done chan struct{} // closed when left reaches 0
	// buf is the send buffer its messages hold until their result.
	buf *sendBuffer
}

// result records the result of one send.
func (c *call) result(s *send, err error) {
	c.mu.Lock()
	if !c.set[s.i] {
		c.errs[s.i], c.set[s.i] = err, true
		c.left--
		if c.left == 0 {
			close(c.done)
		}
	}
	c.mu.Unlock()
}

// finish records the results of ss (err for all of them, or the per-record
// errors of recErrs when err is nil).
func finish(ss []*send, err error, recErrs map[int]error) {
	var size int64
	for i, s := range ss {
		e := err
		if e == nil {
			e = recErrs[i]
		}
		s.call.result(s, e)
		size += s.size
	}
	if len(ss) > 0 && ss[0].call.buf != nil {
		ss[0].call.buf.release(size) // the sends of a connection share its buffer
	}
}

// sendBuffer is the byte budget of the sends of a connection. A batch
// larger than the whole budget is admitted alone, once the buffer is
// empty; while one waits, no other send is admitted, so that the buffer
// empties and the large batch is not starved by a stream of small ones.
type sendBuffer struct {
	mu      sync.Mutex
	used    int64
	max     int64
	large   int           // batches larger than max waiting for an empty buffer
	waiting bool          // a send waits for room
	room    chan struct{} // closed when bytes are released while a send waits
}

func newSendBuffer(max int64) *sendBuffer {
	return &sendBuffer{max: max, room: make(chan struct{})}
}

// acquire takes n bytes, waiting within ctx while the buffer is full.
func (b *sendBuffer) acquire(ctx context.Context, n int64) error {
	oversized := n > b.max
	b.mu.Lock()
	if oversized {
		b.large++
	}
	for {
		// An empty buffer takes a large batch, or anything while no large
		// batch waits; a small send never goes ahead of a large batch.
		if b.used == 0 && (oversized || b.large == 0) || b.large == 0 && b.used+n <= b.max {
			if oversized {
				b.large--
			}
			b.used += n
			b.mu.Unlock()
			return nil
		}
		room, used := b.room, b.used
		b.waiting = true
		b.mu.Unlock()
		select {
		case <-room:
			b.mu.Lock()
		case <-ctx.Done():
			b.mu.Lock()
			if oversized {
				b.large--
				b.wake() // the sends held back for it may go
			}
			b.mu.Unlock()
			return fmt.Errorf("channels/kafka: the send buffer is full (%d bytes waiting for the brokers, at most %d): %w",
				used, b.max, ctx.Err())
		}
	}
}

// wake wakes the sends waiting for room (b.mu held).
func (b *sendBuffer) wake() {
	if b.waiting {
		b.waiting = false
		close(b.room)
		b.room = make(chan struct{})
	}
}

func (b *sendBuffer) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.wake()
	b.mu.Unlock()
}

// errInFlight marks the error of a send whose ctx ended while its produce
// request was in flight: the message may still be written.
var errInFlight = errors.New("the message was in flight: it may still be written")

// notWritten wraps the error of a send taken out of its queue before any
// request carried it.
func notWritten(err error) error {
	return fmt.Errorf("%w (the message was not written)", err)
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
// which stays busy until settle. Sends withdrawn by their caller are
// dropped: they are never written.
func (q *queue) take() []*send {
	q.mu.Lock()
	defer q.mu.Unlock()
	batch := make([]*send, 0, min(len(q.waiting), q.max))
	n := 0
	for ; n < len(q.waiting) && len(batch) < q.max; n++ {
		if s := q.waiting[n]; s.state.CompareAndSwap(sendQueued, sendTaken) {
			batch = append(batch, s)
		}
	}
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
	if len(batch) == 0 {
		return
	}
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
		q.c.writing.Add(1)
		res, err = q.c.client.Produce(ctx, &kafkago.ProduceRequest{
			Topic: q.key.topic, Partition: q.key.partition, RequiredAcks: q.key.acks.native(),
			Compression: q.key.comp.native(), Records: kafkago.NewRecordReader(records(batch)...),
		})
		q.c.writing.Add(-1)
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
	finish(batch, outcome(err), recErrs)
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

// produce writes messages to topic and returns each one's result, waiting
// for them within ctx. A send whose ctx ends while it waits in its queue is
// taken out and never written (its error wraps ctx's); one whose request is
// in flight may still be written (its error wraps errInFlight and ctx's).
func (a *Adapter) produce(ctx context.Context, c *conn, topic string, so []SendOptions, msgs []kafkago.Message) []error {
	errs, _ := a.produceCall(ctx, c, topic, so, msgs)
	return errs
}

// produceCall is produce that also returns the call, whose done channel is
// closed once every message has its final result (for the callers that
// must know whether a message in flight at their deadline was written).
func (a *Adapter) produceCall(ctx context.Context, c *conn, topic string, so []SendOptions, msgs []kafkago.Message) ([]error, *call) {
	if len(msgs) == 0 {
		return nil, nil
	}
	parts, err := a.partitionsOf(ctx, c, topic)
	if err != nil {
		return kit.FailBatch(len(msgs), err), nil
	}
	var bal kafkago.Murmur2Balancer
	cl := &call{errs: make([]error, len(msgs)), set: make([]bool, len(msgs)), left: len(msgs), done: make(chan struct{}), buf: c.buf}
	sends := make([]send, len(msgs))
	var total int64
	// the sends of one queue, in order; most calls have one queue
	var firstQ *queue
	var first []*send
	var more map[*queue][]*send
	for i, m := range msgs {
		o := so[min(i, len(so)-1)]
		p := 0
		switch {
		case o.Partition != nil:
			p = *o.Partition
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
		s.key, s.value, s.headers, s.call, s.i = m.Key, m.Value, m.Headers, cl, i
		s.size = int64(len(m.Key) + len(m.Value))
		for _, h := range m.Headers {
			s.size += int64(len(h.Key) + len(h.Value))
		}
		total += s.size
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
	if err := c.buf.acquire(ctx, total); err != nil {
		return kit.FailBatch(len(msgs), err), nil
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
		return cl.errs, cl
	case <-ctx.Done():
	}
	for i := range sends {
		if s := &sends[i]; s.state.CompareAndSwap(sendQueued, sendWithdrawn) {
			cl.result(s, notWritten(ctx.Err()))
			c.buf.release(s.size)
		}
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	errs := make([]error, len(msgs))
	copy(errs, cl.errs)
	for i, set := range cl.set {
		if !set {
			errs[i] = fmt.Errorf("%w: %w", ctx.Err(), errInFlight)
		}
	}
	return errs, cl
}

// partitionRefresh is how old the partition list of a topic may get
// before a send refreshes it (in the background: the send uses the list it
// has), so that keys hash over the partitions added to a topic as other
// producers see them.
var partitionRefresh = 30 * time.Second

// topicParts is the partition list of a topic, and when it was read.
type topicParts struct {
	ids        []int
	at         time.Time
	refreshing atomic.Bool
}

// partitionsOf returns the partition ids of topic, learnt when the topic
// was ensured and refreshed every partitionRefresh.
func (a *Adapter) partitionsOf(ctx context.Context, c *conn, topic string) ([]int, error) {
	if v, ok := c.topics.Load(topic); ok {
		tp := v.(*topicParts)
		if time.Since(tp.at) > partitionRefresh && tp.refreshing.CompareAndSwap(false, true) {
			go a.refreshPartitions(c, topic, tp)
		}
		return tp.ids, nil
	}
	ids, err := a.partitions(ctx, c, topic, true)
	if err != nil {
		return nil, err
	}
	c.storePartitions(topic, ids)
	return ids, nil
}

// refreshPartitions reads the partition list of topic again.
func (a *Adapter) refreshPartitions(c *conn, topic string, old *topicParts) {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultOpTimeout)
	defer cancel()
	ids, err := a.partitions(ctx, c, topic, false)
	if err != nil {
		ids = old.ids // tried again after partitionRefresh
	}
	if len(ids) != len(old.ids) {
		c.leaders.Delete(topic)
	}
	c.topics.CompareAndSwap(topic, old, &topicParts{ids: ids, at: time.Now()})
}

func (c *conn) storePartitions(topic string, ids []int) {
	c.topics.Store(topic, &topicParts{ids: ids, at: time.Now()})
}
