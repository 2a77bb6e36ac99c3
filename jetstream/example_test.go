package jetstream_test

import (
	"context"
	"fmt"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/jetstream"
)

func ExampleNew() {
	a, err := jetstream.New("nats://127.0.0.1:4222",
		jetstream.WithChannelOptions(jetstream.ChannelOptions{AckWait: time.Minute}))
	if err != nil {
		panic(err)
	}
	p, err := channels.New(channels.WithAdapter(a))
	if err != nil {
		panic(err)
	}
	fmt.Println(a)
	_ = p
	// Output: nats nats://127.0.0.1:4222
}

// A new group that replays what the channel stored in the last hour.
func ExampleChannelOptions() {
	_ = channels.Channels{
		"order.created": {
			Group: "audit",
			AdapterOptions: []any{jetstream.ChannelOptions{
				DeliverPolicy: jetstream.DeliverByStartTime,
				StartTime:     time.Now().Add(-time.Hour),
				Stream:        jetstream.StreamOptions{MaxAge: 7 * 24 * time.Hour},
			}},
			Handler: func(ctx context.Context, m *channels.Message) error { return nil },
		},
	}
}

// Sending twice with one message id stores the message once.
func ExampleWithMsgID() {
	var p *channels.Plugin // started with a jetstream adapter
	send := func() error {
		return p.SendToChannel(context.Background(), "payment.captured", map[string]int{"id": 42},
			jetstream.WithMsgID("payment-42"))
	}
	_ = send
}

func ExampleStreamName() {
	fmt.Println(jetstream.StreamName("shop.order.created"), jetstream.DurableName("v2.payments"))
	// Output: shop_order_created v2_payments
}
