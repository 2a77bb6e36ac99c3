package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	produceAPI "github.com/segmentio/kafka-go/protocol/produce"
)

// requestsPerLeader bounds the produce requests of one acknowledgement
// level in flight to one broker. The queues that get ready meanwhile wait
// for one of them to end and then share the next request: the fewer the
// requests, the less work for the broker per message.
const requestsPerLeader = 2

// sender writes the ready queues of one acknowledgement level: the queues
// ready at the same time whose partitions have the same leader are written
// in one produce request (a partition at most once per request, with the
// queue's next messages), up to requestsPerLeader requests in flight per
// leader. A queue whose partition's leader is not known is written in
// requests of its own (queue.write), and so is a queue whose messages
// failed in a shared request with an error worth another attempt.
type sender struct {
	c    *conn
	acks Acks

	mu       sync.Mutex
	queued   []*queue    // ready, in the order they got ready
	inFlight map[int]int // requests in flight per leader id
	running  bool        // run is collecting the queued queues
}

func newSenders(c *conn) {
	for i := range c.senders {
		c.senders[i] = &sender{c: c, acks: Acks(i), inFlight: map[int]int{}}
	}
}

func (c *conn) sender(acks Acks) *sender { return c.senders[acks] }

// ready lists qs, which have sends waiting and no request in flight.
func (s *sender) ready(qs ...*queue) {
	s.mu.Lock()
	s.queued = append(s.queued, qs...)
	start := !s.running
	s.running = true
	s.mu.Unlock()
	if start {
		go s.run()
	}
}

// kick makes run look at the queued queues again (a request ended).
func (s *sender) kick() {
	s.mu.Lock()
	start := !s.running && len(s.queued) > 0
	s.running = s.running || start
	s.mu.Unlock()
	if start {
		go s.run()
	}
}

// run starts requests for the queued queues whose leader has room, until
// only queues of busy leaders are left.
func (s *sender) run() {
	for {
		s.mu.Lock()
		qs := s.queued
		s.queued = nil
		s.mu.Unlock()
		if len(qs) == 0 {
			s.mu.Lock()
			if len(s.queued) == 0 {
				s.running = false
				s.mu.Unlock()
				return
			}
			s.mu.Unlock()
			continue
		}
		var order []int
		byLeader := map[int][]*queue{}
		for _, q := range qs {
			l := s.c.leader(q.key.topic, q.key.partition)
			if l < 0 {
				go func() {
					q.write(q.take(), 1)
					q.settle()
				}()
				continue
			}
			if _, ok := byLeader[l]; !ok {
				order = append(order, l)
			}
			byLeader[l] = append(byLeader[l], q)
		}
		type request struct {
			leader int
			qs     []*queue
		}
		var reqs []request
		var held []*queue
		s.mu.Lock()
		arrived := len(s.queued) > 0
		for _, l := range order {
			group := byLeader[l]
			if s.inFlight[l] >= requestsPerLeader {
				held = append(held, group...)
				continue
			}
			// a partition once per request (queues of one partition with
			// different compressions wait for the next)
			var in []*queue
			seen := make(map[queueKey]bool, len(group))
			for _, q := range group {
				k := queueKey{topic: q.key.topic, partition: q.key.partition}
				if seen[k] {
					held = append(held, q)
					continue
				}
				seen[k] = true
				in = append(in, q)
			}
			s.inFlight[l]++
			reqs = append(reqs, request{leader: l, qs: in})
		}
		s.queued = append(held, s.queued...)
		stop := !arrived && len(reqs) == 0
		if stop {
			s.running = false
		}
		s.mu.Unlock()
		for _, r := range reqs {
			go s.write(r.leader, r.qs)
		}
		if stop {
			return
		}
	}
}

// write sends one produce request of the next messages of qs, whose
// partitions have leader as their leader, and settles the queues.
func (s *sender) write(leader int, qs []*queue) {
	batches := make([][]*send, 0, len(qs))
	req := &produceAPI.Request{Acks: int16(s.acks.native()), Timeout: int32(DefaultWriteTimeout / time.Millisecond)}
	topics := map[string]int{}
	kept := qs[:0:0]
	for _, q := range qs {
		b := q.take()
		if len(b) == 0 { // every send withdrawn by its caller
			q.settle()
			continue
		}
		batches, kept = append(batches, b), append(kept, q)
	}
	qs = kept
	if len(qs) == 0 {
		s.mu.Lock()
		s.inFlight[leader]--
		s.mu.Unlock()
		s.kick()
		return
	}
	for i, q := range qs {
		t, ok := topics[q.key.topic]
		if !ok {
			t = len(req.Topics)
			topics[q.key.topic] = t
			req.Topics = append(req.Topics, produceAPI.RequestTopic{Topic: q.key.topic})
		}
		req.Topics[t].Partitions = append(req.Topics[t].Partitions, produceAPI.RequestPartition{
			Partition: int32(q.key.partition),
			RecordSet: protocol.RecordSet{
				Attributes: protocol.Attributes(q.key.comp.native()) & 7,
				Records:    kafkago.NewRecordReader(records(batches[i])...),
			},
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultWriteTimeout)
	m, err := s.c.transport().RoundTrip(ctx, s.c.client.Addr, req)
	cancel()
	var res *produceAPI.Response
	if err == nil && s.acks != AcksNone {
		var ok bool
		if res, ok = m.(*produceAPI.Response); !ok {
			err = fmt.Errorf("channels/kafka: unexpected produce response %T", m)
		}
	}
	s.mu.Lock()
	s.inFlight[leader]--
	s.mu.Unlock()
	// routing failed (the leaders moved since they were looked up):
	// nothing was sent
	var routing *produceAPI.Error
	unsent := errors.As(err, &routing)
	for i, q := range qs {
		recErrs, e := partitionResult(res, err, q.key)
		if e != nil && (unsent || retriable(e)) {
			s.c.leaders.Delete(q.key.topic)
			first := 2
			if unsent {
				first = 1
			}
			go func() {
				q.write(batches[i], first)
				q.settle()
			}()
			continue
		}
		finish(batches[i], outcome(e), recErrs)
		q.settle()
	}
	s.kick()
}

// partitionResult is the result of k's partition in a produce response.
func partitionResult(res *produceAPI.Response, err error, k queueKey) (map[int]error, error) {
	if err != nil || res == nil {
		return nil, err
	}
	for _, t := range res.Topics {
		if t.Topic != k.topic {
			continue
		}
		for _, p := range t.Partitions {
			if int(p.Partition) != k.partition {
				continue
			}
			var recErrs map[int]error
			if len(p.RecordErrors) > 0 {
				recErrs = make(map[int]error, len(p.RecordErrors))
				for _, re := range p.RecordErrors {
					recErrs[int(re.BatchIndex)] = errors.New(re.BatchIndexErrorMessage)
				}
			}
			if p.ErrorCode == 0 {
				return recErrs, nil
			}
			if p.ErrorMessage == "" {
				return recErrs, kafkago.Error(p.ErrorCode)
			}
			return recErrs, fmt.Errorf("%w: %s", kafkago.Error(p.ErrorCode), p.ErrorMessage)
		}
	}
	return nil, fmt.Errorf("channels/kafka: no produce result for %s[%d]", k.topic, k.partition)
}

func (c *conn) transport() kafkago.RoundTripper {
	if c.client.Transport != nil {
		return c.client.Transport
	}
	return kafkago.DefaultTransport
}

// leader returns the id of the leader of a partition, -1 when not known:
// from the transport's metadata, kept per topic until a request to the
// topic fails.
func (c *conn) leader(topic string, partition int) int {
	if v, ok := c.leaders.Load(topic); ok {
		if l, ok := v.(map[int]int)[partition]; ok {
			return l
		}
		return -1
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultOpTimeout)
	defer cancel()
	md, err := c.client.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return -1
	}
	for _, t := range md.Topics {
		if t.Name != topic || t.Error != nil {
			continue
		}
		ls := make(map[int]int, len(t.Partitions))
		for _, p := range t.Partitions {
			if p.Error == nil && p.Leader.Host != "" {
				ls[p.ID] = p.Leader.ID
			}
		}
		c.leaders.Store(topic, ls)
		if l, ok := ls[partition]; ok {
			return l
		}
	}
	return -1
}

// ProduceRequestsInFlight counts the produce requests of the adapter
// written and not answered yet (0 when not connected): a diagnostic, and
// what tests wait on to know a send is in flight.
func (a *Adapter) ProduceRequestsInFlight() int {
	c := a.life.Load()
	if c == nil {
		return 0
	}
	return c.requestsInFlight()
}

// requestsInFlight counts the produce requests written and not answered
// yet: the senders' shared requests and the requests of queues written on
// their own (queue.write: a partition whose leader is not known, a retry).
func (c *conn) requestsInFlight() int {
	n := int(c.writing.Load())
	for _, s := range c.senders {
		s.mu.Lock()
		for _, k := range s.inFlight {
			n += k
		}
		s.mu.Unlock()
	}
	return n
}
