package embedded_test

import (
	"context"
	"fmt"

	"github.com/microchannels/channels"
	_ "github.com/microchannels/channels/jetstream/embedded"
)

type Shipping struct {
	Name     string
	Channels channels.Channels
}

// Two plugins on nats-embedded:// share one in-process NATS server, as two
// services share a broker; it stops with the last of them.
func Example() {
	done := make(chan struct{})
	consumer, _ := channels.New(channels.WithAdapter("nats-embedded://"))
	_ = consumer.Register(&Shipping{Name: "shipping", Channels: channels.Channels{
		"order.paid": channels.On(func(ctx context.Context, m *channels.Message) error {
			fmt.Printf("%s for group %s: %s (attempt %d)\n", m.Channel, m.Group, m.Payload, m.Attempt)
			close(done)
			return nil
		}),
	}})
	producer, _ := channels.New(channels.WithAdapter("nats-embedded://"))
	ctx := context.Background()
	_ = consumer.Start(ctx)
	_ = producer.Start(ctx)
	defer consumer.Stop(ctx)
	defer producer.Stop(ctx)

	_ = producer.SendToChannel(ctx, "order.paid", map[string]int{"id": 7})
	<-done
	// Output: order.paid for group shipping: {"id":7} (attempt 1)
}
