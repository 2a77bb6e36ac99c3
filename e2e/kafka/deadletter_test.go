package kafka

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/e2e/brokerenv"
)

// TestDeadLetterTopicHasItsOwnSettings: the dead-letter topic is created
// (by the subscription of a channel whose topic is compacted) with its own
// settings, not the channel's: another channel sharing it dead-letters a
// message without a key, which a compacted topic would refuse, and the
// copy is written once.
func TestDeadLetterTopicHasItsOwnSettings(t *testing.T) {
	needKafka(t)
	ch, dlq := unique("dlq.settings"), unique("dlq.settings.DLQ")
	opts := timings
	opts.Topic.Configs = map[string]string{"cleanup.policy": "compact"}
	dead := &channelstest.Recorder{}
	fails := func(context.Context, *channels.Message) error { return errors.New("fails for good") }
	startPlugin(t, &service{Name: "compacted", Channels: channels.Channels{ch: {MaxRetries: 0,
		DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq}, AdapterOptions: []any{opts}, Handler: fails}}})
	startPlugin(t, &service{Name: "dlq-reader", Channels: channels.Channels{dlq: channels.On(dead.Handle)}})
	other := ch + ".plain"
	p := startPlugin(t, &service{Name: "plain", Channels: channels.Channels{other: {MaxRetries: 0,
		DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq}, Handler: fails}}})
	if err := p.SendToChannel(context.Background(), other, "no key"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the dead letter written", func() bool { return dead.Count() == 1 })
	client := &kafkago.Client{Addr: kafkago.TCP(brokerenv.KafkaBrokers()...)}
	res, err := client.DescribeConfigs(context.Background(), &kafkago.DescribeConfigsRequest{Resources: []kafkago.DescribeConfigRequestResource{
		{ResourceType: kafkago.ResourceTypeTopic, ResourceName: dlq, ConfigNames: []string{"cleanup.policy"}}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res.Resources {
		for _, e := range r.ConfigEntries {
			if e.ConfigName == "cleanup.policy" && e.ConfigValue != "delete" {
				t.Fatalf("the dead-letter topic has cleanup.policy=%s", e.ConfigValue)
			}
		}
	}
	consistently(t, time.Second, "one dead letter", func() bool { return dead.Count() == 1 })
}
