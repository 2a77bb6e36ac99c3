package kafka

import (
	"context"
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/e2e/brokerenv"
	"github.com/microchannels/channels/kafka"
)

// TestPartitionsAddedWhileTheGroupIsEmpty: a group consumed a topic of 2
// partitions and stopped; the topic grew to 4 and producers wrote to the
// new partitions; when the group comes back, it reads those messages from
// the beginning of the new partitions (an existing group never starts a
// partition at its end).
func TestPartitionsAddedWhileTheGroupIsEmpty(t *testing.T) {
	needKafka(t)
	ch, group := unique("partitions.added"), "grow-group"
	opts := timings
	opts.Topic.Partitions = 2
	got := &channelstest.Recorder{}
	schema := &service{Name: "grow", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 4,
		AdapterOptions: []any{opts}, Handler: got.Handle}}}
	first := startPlugin(t, schema)
	if err := first.SendToChannel(context.Background(), ch, "before"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the first message processed", func() bool { return got.Count() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := first.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	client := &kafkago.Client{Addr: kafkago.TCP(brokerenv.KafkaBrokers()...)}
	res, err := client.CreatePartitions(ctx, &kafkago.CreatePartitionsRequest{Topics: []kafkago.TopicPartitionsConfig{{Name: ch, Count: 4}}})
	if err == nil {
		err = res.Errors[ch]
	}
	if err != nil {
		t.Fatal(err)
	}
	sender := startPlugin(t, nil)
	const n = 10
	for i := range n {
		if err := sender.SendToChannel(ctx, ch, i, kafka.WithPartition(2+i%2)); err != nil {
			t.Fatal(err)
		}
	}
	startPlugin(t, schema)
	eventually(t, 30*time.Second, "the messages of the new partitions processed", func() bool { return got.Count() == 1+n })
}
