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

// Two members start a brand-new group at the same time, and messages are
// sent between their starts: the group starts at the earlier pin, so the
// messages sent after either member returned from Subscribe are read.
//   - earlier pin kept: the other member pins the partition at its end and
//     returns, messages are sent, while this member, which found nothing
//     committed, reads the (later) end: it leaves the other's pin.
//   - later pin lowered: this member reads the end, then messages are sent
//     and the other member pins the (later) end: this member lowers it.
func TestConcurrentPinsSkipNothing(t *testing.T) {
	t.Run("earlier pin kept", func(t *testing.T) { concurrentPins(t, &pinRead) })
	t.Run("later pin lowered", func(t *testing.T) { concurrentPins(t, &pinListed) })
}

// concurrentPins runs pinStart with the other member's pin, after 5
// messages, made at *hook, and checks that the group starts at 0.
func concurrentPins(t *testing.T, hook *func()) {
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
			t.Error(err)
		}
	}
	pin := func(off int64) {
		res, err := c.client.OffsetCommit(ctx, &kafkago.OffsetCommitRequest{GroupID: group, GenerationID: -1,
			Topics: map[string][]kafkago.OffsetCommit{topic: {{Partition: 0, Offset: off, Metadata: "pin"}}}})
		if err != nil || res.Topics[topic][0].Error != nil {
			t.Errorf("the other member's pin: %v %+v", err, res)
		}
	}
	defer func() { *hook = nil }()
	early := hook == &pinRead
	*hook = func() {
		*hook = nil
		if early {
			pin(0) // the other member pinned the end before the sends
		}
		for range 5 {
			send()
		}
		if !early {
			pin(5) // the other member pinned the end after the sends
		}
	}
	if err := a.pinStart(ctx, c, topic, group, broker.StartNewest); err != nil {
		t.Fatal(err)
	}
	res, err := c.client.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: {0}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Topics[topic][0].CommittedOffset; got != 0 {
		t.Fatalf("the group starts at %d: the 5 messages sent after the first member's start are skipped", got)
	}
}
