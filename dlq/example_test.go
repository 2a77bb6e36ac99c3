package dlq_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/dlq"
	"github.com/microchannels/channels/memory"
)

type Billing struct {
	Name     string
	Channels channels.Channels
}

// A handler fails for good, its message is dead-lettered, and an operator
// lists the dead letters and replays them once the cause is fixed.
func Example() {
	ctx := context.Background()
	bus := memory.NewBus()
	fixed := make(chan struct{})
	done := make(chan string, 1)
	p, _ := channels.New(channels.WithAdapter(memory.New(memory.WithBus(bus))), channels.WithNamespace("shop"))
	_ = p.Register(&Billing{Name: "billing", Channels: channels.Channels{
		"order.paid": {MaxRetries: channels.NoRetries,
			DeadLettering: &channels.DeadLettering{Enabled: true},
			Handler: func(ctx context.Context, m *channels.Message) error {
				select {
				case <-fixed:
					done <- fmt.Sprintf("handled %s on attempt %d", m.Payload, m.Attempt)
					return nil
				default:
					return errors.New("card service down")
				}
			}},
	}})
	_ = p.Start(ctx)
	defer p.Stop(ctx)
	_ = p.SendToChannel(ctx, "order.paid", map[string]int{"id": 7})

	// The operator's side: an adapter on the same broker.
	ops := memory.New(memory.WithBus(bus))
	_ = ops.Connect(ctx, broker.Env{})
	queue, _ := dlq.QueueName("shop", "") // "shop.FAILED_MESSAGES"
	var dead []dlq.Entry
	tick, giveUp := time.NewTicker(10*time.Millisecond), time.After(10*time.Second)
	defer tick.Stop()
	for len(dead) == 0 {
		select {
		case <-giveUp:
			fmt.Println("no dead letter within 10s")
			return
		case <-tick.C:
		}
		dead, _ = dlq.List(ctx, ops, queue, dlq.Filter{Channel: "shop.order.paid"})
	}
	e := dead[0]
	fmt.Printf("%s from %s (group %s): %s: %s, %d attempt(s)\n", queue, e.OriginalChannel, e.OriginalGroup, e.ErrorName, e.ErrorMessage, e.Attempts)

	close(fixed)
	res, err := dlq.Replay(ctx, ops, queue, dlq.Filter{Channel: "shop.order.paid"}, dlq.ReplayOptions{})
	fmt.Println("replayed", res.Sent, "removed", res.Removed, err)
	fmt.Println(<-done)
	// Output:
	// shop.FAILED_MESSAGES from shop.order.paid (group billing): Error: card service down, 1 attempt(s)
	// replayed 1 removed 1 <nil>
	// handled {"id":7} on attempt 1
}

// FormatPayload shows a payload for people.
func ExampleFormatPayload() {
	format, text := dlq.FormatPayload([]byte(`{"id":7,"items":["book"]}`), 0)
	fmt.Println(format)
	fmt.Println(text)
	// Output:
	// JSON
	// {
	//   "id": 7,
	//   "items": [
	//     "book"
	//   ]
	// }
}
