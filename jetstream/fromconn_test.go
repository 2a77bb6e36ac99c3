package jetstream_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/jetstream"
)

// Connect and Close cycles of adapters on a connection the caller owns
// (NewFromClient) leave no subscription and no goroutine behind on it.
func TestNewFromConnNoLeak(t *testing.T) {
	url, _ := startServer(t)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cycle := func(i int) {
		a, err := jetstream.NewFromClient(nc, jetstream.WithChannelOptions(fast))
		if err != nil {
			t.Fatal(err)
		}
		var got counter
		p, err := channels.New(channels.WithAdapter(a))
		if err != nil {
			t.Fatal(err)
		}
		_ = p.Register(&service{Name: "leak", Channels: channels.Channels{"leak": {Group: "g",
			Handler: func(context.Context, *channels.Message) error { got.inc(); return nil }}}})
		ctx := context.Background()
		if err := p.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if err := p.SendToChannel(ctx, "leak", i); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "delivered", func() bool { return got.get() == 1 })
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := p.Stop(sctx); err != nil {
			t.Fatal(err)
		}
	}
	cycle(0)
	subs, goroutines := nc.NumSubscriptions(), runtime.NumGoroutine()
	for i := 1; i <= 10; i++ {
		cycle(i)
	}
	eventually(t, 5*time.Second, "no subscription or goroutine left", func() bool {
		return nc.NumSubscriptions() <= subs && runtime.NumGoroutine() <= goroutines+2
	})
	t.Logf("after 11 cycles: %d subscriptions (first cycle %d), %d goroutines (first cycle %d)",
		nc.NumSubscriptions(), subs, runtime.NumGoroutine(), goroutines)
}
