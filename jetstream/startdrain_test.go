package jetstream_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/jetstream"
)

// A subscription drained while it starts leaves none of its
// subscriptions on the connection (the watches of the consumer included),
// and Start and Drain share no unguarded state (run with -race).
func TestStartRacingDrainLeavesNoSubscription(t *testing.T) {
	url, _ := startServer(t)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	a, err := jetstream.NewFromClient(nc, jetstream.WithChannelOptions(fast))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := a.Connect(ctx, broker.Env{}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = a.Close(ctx) }()
	cycle := func() {
		ch := &broker.Channel{Name: "race.topic", Group: "g", MaxInFlight: 2,
			Handler: func(context.Context, *broker.Message) error { return nil }}
		sub, err := a.Subscribe(ctx, ch)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); sub.Start() }()
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_ = sub.Drain(dctx)
		cancel()
		wg.Wait()
	}
	cycle() // the connection's own subscriptions (request inbox) are made
	eventually(t, 10*time.Second, "first cycle settled", func() bool { return nc.NumSubscriptions() <= 2 })
	base := nc.NumSubscriptions()
	for range 30 {
		cycle()
	}
	eventually(t, 10*time.Second, "no subscription left", func() bool { return nc.NumSubscriptions() <= base })
}
