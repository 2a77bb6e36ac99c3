package kafka

import (
	"errors"
	"testing"

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
