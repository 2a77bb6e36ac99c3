package memory_test

import (
	"context"
	"fmt"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/memory"
)

type Shipping struct {
	Name     string
	Channels channels.Channels
}

// Two plugins on one bus behave as two services on one broker.
func ExampleNew() {
	bus := memory.NewBus()
	done := make(chan struct{})
	consumer, _ := channels.New(channels.WithAdapter(memory.New(memory.WithBus(bus))))
	_ = consumer.Register(&Shipping{Name: "shipping", Channels: channels.Channels{
		"order.paid": channels.On(func(ctx context.Context, m *channels.Message) error {
			fmt.Printf("%s for group %s: %s\n", m.Channel, m.Group, m.Payload)
			close(done)
			return nil
		}),
	}})
	producer, _ := channels.New(channels.WithAdapter(memory.New(memory.WithBus(bus))))
	ctx := context.Background()
	_ = consumer.Start(ctx)
	_ = producer.Start(ctx)
	defer consumer.Stop(ctx)
	defer producer.Stop(ctx)

	_ = producer.SendToChannel(ctx, "order.paid", map[string]int{"id": 7})
	<-done
	// Output: order.paid for group shipping: {"id":7}
}
