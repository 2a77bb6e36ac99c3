package amqp_test

import (
	"context"
	"fmt"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/amqp"
	"github.com/microchannels/channels/broker"
)

func ExampleNew() {
	// A failover list; credentials are never logged.
	a, err := amqp.New("amqp://guest:guest@rabbit-1:5672/;amqp://guest:guest@rabbit-2:5672/",
		amqp.WithChannelOptions(amqp.ChannelOptions{Consumer: amqp.ConsumerOptions{
			Arguments: amqp091.Table{"x-priority": 10}}}))
	if err != nil {
		panic(err)
	}
	p, err := channels.New(channels.WithAdapter(a))
	if err != nil {
		panic(err)
	}
	_ = p
	fmt.Println(a)
	// Output: amqp amqp://rabbit-1:5672;amqp://rabbit-2:5672
}

func ExampleChannelOptions() {
	_ = channels.Channels{
		"order.created": {
			MaxInFlight: 10, // the consumer's prefetch
			// A quorum queue: RabbitMQ counts the deliveries itself.
			AdapterOptions: []any{amqp.ChannelOptions{Queue: amqp.QueueOptions{
				Arguments: amqp091.Table{"x-queue-type": "quorum"}}}},
			Handler: func(ctx context.Context, m *channels.Message) error { return nil },
		},
	}
}

func ExampleWithQueue() {
	var p *channels.Plugin // started with an AMQP adapter
	send := func() error {
		// Straight to a queue through the default exchange; the channel name
		// labels errors only.
		return p.SendToChannel(context.Background(), "jobs", map[string]int{"id": 1},
			amqp.WithQueue("jobs.inbox"), amqp.WithPriority(5), amqp.WithExpiration(time.Minute))
	}
	_ = send
}

func ExampleSendOptions() {
	var p *channels.Plugin // started with an AMQP adapter
	send := func() error {
		return p.SendToChannel(context.Background(), "order.created", map[string]int{"id": 1},
			broker.WithAdapterOptions(amqp.SendOptions{CorrelationID: "req-42", Mandatory: true}))
	}
	_ = send
}
