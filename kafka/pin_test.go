package kafka

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/microchannels/channels/broker"
)

// Two members start a brand-new group at the same time: the other member
// pins the partition at its end and returns, and messages are sent, while
// this member, which found nothing committed, reads the (later) end. This
// member leaves the other's pin: the messages sent between the two starts
// are read.
func TestConcurrentPinsSkipNothing(t *testing.T) {
	addr := testBroker(t)
	a, err := NewFromBrokers([]string{addr})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.Connect(ctx, broker.Env{}); err != nil {
		t.Fatal(err)
	}
	defer a.Close(ctx)
	c, err := a.conn()
	if err != nil {
		t.Fatal(err)
	}
	topic := fmt.Sprintf("pin.race.%d.%d", os.Getpid(), time.Now().UnixNano())
	group := GroupID("g", topic)
	if err := a.ensureTopic(ctx, c, topic, TopicOptions{Partitions: 1, ReplicationFactor: 1}); err != nil {
		t.Fatal(err)
	}
	send := func() {
		out := &broker.Outgoing{Payload: []byte(`"x"`)}
		if err := a.Publish(ctx, topic, out); err != nil {
			t.Fatal(err)
		}
	}
	defer func() { pinRead = nil }()
	pinRead = func() {
		pinRead = nil
		// The other member: pinned at the end (0), returned, and 5
		// messages were sent.
		res, err := c.client.OffsetCommit(ctx, &kafkago.OffsetCommitRequest{GroupID: group, GenerationID: -1,
			Topics: map[string][]kafkago.OffsetCommit{topic: {{Partition: 0, Offset: 0, Metadata: "pin"}}}})
		if err != nil || res.Topics[topic][0].Error != nil {
			t.Errorf("the other member's pin: %v %+v", err, res)
		}
		for range 5 {
			send()
		}
	}
	if err := a.pinStart(ctx, c, topic, group, false); err != nil {
		t.Fatal(err)
	}
	res, err := c.client.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: {0}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Topics[topic][0].CommittedOffset; got != 0 {
		t.Fatalf("the group starts at %d: the 5 messages sent after the other member's start are skipped", got)
	}
}
