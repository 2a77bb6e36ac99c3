package channels_test

import (
	"context"
	"errors"
	"log"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/dlq"
	"github.com/microchannels/channels/memory"
)

// TestDeadLetterQueueOfAChannel: a service finds the dead-letter queue of
// its own channel and replays it with its own adapter.
func TestDeadLetterQueueOfAChannel(t *testing.T) {
	ctx := context.Background()
	var fixed, handled atomic.Bool
	svc := &struct {
		Name     string
		Channels channels.Channels
	}{Name: "billing", Channels: channels.Channels{
		"order.paid": {MaxRetries: channels.NoRetries, DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: "PAID_FAILED"},
			Handler: func(context.Context, *channels.Message) error {
				if !fixed.Load() {
					return errors.New("card service down")
				}
				handled.Store(true)
				return nil
			}},
		"order.kept": {Handler: func(context.Context, *channels.Message) error { return nil }},
	}}
	p, err := channels.New(channels.WithAdapter(memory.New(memory.WithBus(memory.NewBus()))), channels.WithNamespace("shop"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Register(svc); err != nil {
		t.Fatal(err)
	}
	if q, ok := p.DeadLetterQueue("order.paid"); ok {
		t.Fatalf("before Start: %q", q)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(context.Background()) })
	for _, name := range []string{"order.paid", "shop.order.paid"} {
		if q, ok := p.DeadLetterQueue(name); !ok || q != "shop.PAID_FAILED" {
			t.Fatalf("%s: %q %v", name, q, ok)
		}
	}
	for _, name := range []string{"order.kept", "nosuch"} {
		if q, ok := p.DeadLetterQueue(name); ok {
			t.Fatalf("%s: %q", name, q)
		}
	}
	if err := p.SendToChannel(ctx, "order.paid", 7); err != nil {
		t.Fatal(err)
	}
	q, _ := p.DeadLetterQueue("order.paid")
	channelstest.EventuallyTrue(t, 5*time.Second, "the dead letter", func() bool {
		es, err := dlq.List(ctx, p.Adapter(), q, dlq.Filter{})
		return err == nil && len(es) == 1
	})
	fixed.Store(true)
	if res, err := dlq.Replay(ctx, p.Adapter(), q, dlq.Filter{}, dlq.ReplayOptions{Namespace: "shop"}); err != nil || res.Sent != 1 {
		t.Fatalf("replay: %+v %v", res, err)
	}
	channelstest.EventuallyTrue(t, 5*time.Second, "the replayed message handled", handled.Load)
}

// A service replays the dead letters of its own channel with the plugin's
// adapter, once the plugin started.
func ExamplePlugin_DeadLetterQueue() {
	ctx := context.Background()
	p, _ := channels.New(channels.WithAdapter(memory.New()), channels.WithNamespace("shop"))
	_ = p.Register(&struct {
		Name     string
		Channels channels.Channels
	}{Name: "billing", Channels: channels.Channels{"order.paid": {
		DeadLettering: &channels.DeadLettering{Enabled: true},
		Handler:       func(context.Context, *channels.Message) error { return nil }}}})
	_ = p.Start(ctx)
	defer p.Stop(ctx)

	if q, ok := p.DeadLetterQueue("order.paid"); ok {
		res, err := dlq.Replay(ctx, p.Adapter(), q, dlq.Filter{Channel: "shop.order.paid"},
			dlq.ReplayOptions{Namespace: "shop"})
		log.Printf("replayed %d: %v", res.Sent, err)
	}
}
