package kafka

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"
	kafkago "github.com/segmentio/kafka-go"
	produceAPI "github.com/segmentio/kafka-go/protocol/produce"
)

// Each queue of a shared produce request gets its own partition's result.
func TestPartitionResultOfSharedRequest(t *testing.T) {
	res := &produceAPI.Response{Topics: []produceAPI.ResponseTopic{
		{Topic: "a", Partitions: []produceAPI.ResponsePartition{
			{Partition: 0},
			{Partition: 1, ErrorCode: int16(kafkago.NotLeaderForPartition)},
			{Partition: 2, RecordErrors: []produceAPI.ResponseError{{BatchIndex: 1, BatchIndexErrorMessage: "bad record"}}},
		}},
		{Topic: "b", Partitions: []produceAPI.ResponsePartition{
			{Partition: 0, ErrorCode: int16(kafkago.MessageSizeTooLarge), ErrorMessage: "too big"},
		}},
	}}
	if rec, err := partitionResult(res, nil, queueKey{topic: "a", partition: 0}); err != nil || rec != nil {
		t.Fatalf("a[0]: %v %v", err, rec)
	}
	if _, err := partitionResult(res, nil, queueKey{topic: "a", partition: 1}); !errors.Is(err, kafkago.NotLeaderForPartition) || !retriable(err) {
		t.Fatalf("a[1]: %v", err)
	}
	if rec, err := partitionResult(res, nil, queueKey{topic: "a", partition: 2}); err != nil || rec[1] == nil || rec[0] != nil {
		t.Fatalf("a[2]: %v %v", err, rec)
	}
	if _, err := partitionResult(res, nil, queueKey{topic: "b", partition: 0}); !errors.Is(err, kafkago.MessageSizeTooLarge) || retriable(err) {
		t.Fatalf("b[0]: %v", err)
	}
	if _, err := partitionResult(res, nil, queueKey{topic: "b", partition: 1}); err == nil {
		t.Fatal("b[1]: a partition missing from the response must fail its sends")
	}
	boom := errors.New("boom")
	if _, err := partitionResult(nil, boom, queueKey{topic: "a"}); err != boom {
		t.Fatalf("request error: %v", err)
	}
}

// A send reports its own result, once.
func TestCallResults(t *testing.T) {
	cl := &call{errs: make([]error, 3), set: make([]bool, 3), left: 3, done: make(chan struct{})}
	ss := []*send{{call: cl, i: 0}, {call: cl, i: 1}, {call: cl, i: 2}}
	boom := errors.New("boom")
	finish(ss[:2], nil, map[int]error{1: boom})
	if cl.left != 1 || cl.errs[0] != nil || cl.errs[1] != boom || !cl.set[0] || !cl.set[1] || cl.set[2] {
		t.Fatalf("after two: %+v", cl)
	}
	select {
	case <-cl.done:
		t.Fatal("done before the last result")
	default:
	}
	finish(ss[2:], boom, nil)
	select {
	case <-cl.done:
	default:
		t.Fatal("not done after the last result")
	}
	if cl.errs[2] != boom {
		t.Fatalf("last result %v", cl.errs[2])
	}
	finish(ss[2:], nil, nil) // a second result of a send is ignored
	if cl.errs[2] != boom {
		t.Fatal("a send's result was overwritten")
	}
}

// The send buffer lets sends through up to its size (a larger one alone),
// makes the next wait for room within its ctx, and wakes it on a release.
func TestSendBuffer(t *testing.T) {
	b := newSendBuffer(100)
	ctx := context.Background()
	if err := b.acquire(ctx, 60); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := b.acquire(short, 60); err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a send over the buffer: %v", err)
	}
	got := make(chan error, 1)
	go func() { got <- b.acquire(ctx, 60) }()
	b.release(60)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	b.release(60)
	if err := b.acquire(ctx, 500); err != nil { // larger than the buffer: alone
		t.Fatal(err)
	}
}

// A send withdrawn by its caller is dropped from its queue, never taken
// into a request.
func TestWithdrawnSendsAreNotTaken(t *testing.T) {
	q := &queue{max: 10}
	ss := []*send{{i: 0}, {i: 1}, {i: 2}}
	q.add(ss...)
	ss[1].state.Store(sendWithdrawn)
	batch := q.take()
	if len(batch) != 2 || batch[0] != ss[0] || batch[1] != ss[2] {
		t.Fatalf("taken %v", batch)
	}
	if ss[0].state.Load() != sendTaken || ss[1].state.CompareAndSwap(sendQueued, sendWithdrawn) {
		t.Fatal("states")
	}
}

// A batch larger than the send buffer is admitted once the buffer empties,
// even while smaller sends keep coming: they wait behind it.
func TestOversizedBatchIsNotStarved(t *testing.T) {
	b := newSendBuffer(100)
	if err := b.acquire(context.Background(), 40); err != nil {
		t.Fatal(err)
	}
	admitted := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		admitted <- b.acquire(ctx, 150)
	}()
	channelstest.EventuallyTrue(t, 5*time.Second, "the large batch waits", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.waiting
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := b.acquire(ctx, 40); err == nil {
		t.Fatal("a small send was admitted ahead of the waiting large batch: the buffer never empties for it")
	}
	b.release(40)
	select {
	case err := <-admitted:
		if err != nil {
			t.Fatalf("the large batch: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the large batch was not admitted once the buffer emptied")
	}
	b.release(150)
	// The buffer is empty and a large batch was woken but has not taken it
	// yet (b.large counts it): a small send arriving then waits as well.
	b.mu.Lock()
	b.large++
	b.mu.Unlock()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	if err := b.acquire(ctx2, 40); err == nil {
		t.Fatal("a small send took the empty buffer ahead of a waiting large batch")
	}
}

// A produce request of a queue written on its own (its partition's leader
// is not known, or a retry) counts as in flight until it is answered.
func TestQueueWritesCountInFlight(t *testing.T) {
	f := &produceHeld{release: make(chan struct{})}
	c := &conn{client: &kafkago.Client{Addr: kafkago.TCP("127.0.0.1:1"), Transport: f}}
	newSenders(c)
	q := &queue{key: queueKey{topic: "t", partition: 0, acks: AcksAll}, c: c, max: 10}
	cl := &call{errs: make([]error, 1), set: make([]bool, 1), left: 1, done: make(chan struct{})}
	go q.write([]*send{{value: []byte(`"x"`), call: cl}}, 1)
	eventually(t, 5*time.Second, "the request counted in flight", func() bool { return c.requestsInFlight() == 1 })
	close(f.release)
	<-cl.done
	eventually(t, 5*time.Second, "the answered request no longer counted", func() bool { return c.requestsInFlight() == 0 })
}
