package jetstream_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest/linkfault"
)

// Close returns by its context's deadline (plus 250 ms) when the link
// froze with handlers running and messages held: the flushes and the
// connection's close are bounded by ctx, not given seconds of their own.
func TestCloseBoundedOnFrozenLink(t *testing.T) {
	url, _ := startServer(t)
	l := linkfault.New(t, strings.TrimPrefix(url, "nats://"))
	a := newAdapter(t, "nats://"+l.Addr(), fast)
	var running atomic.Int32
	p, err := channels.New(channels.WithAdapter(a))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Register(&service{Name: "c", Channels: channels.Channels{"frozen": {Group: "g", MaxInFlight: 2,
		Handler: func(ctx context.Context, _ *channels.Message) error {
			running.Add(1)
			<-ctx.Done()
			return ctx.Err()
		}}}}); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = p.Stop(ctx)
	}()
	snd := startPlugin(t, newAdapter(t, url, fast), nil)
	for i := range 4 {
		if err := snd.SendToChannel(context.Background(), "frozen", i); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, "handlers running", func() bool { return running.Load() == 2 })
	l.Freeze()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = a.Close(ctx)
	took := time.Since(start)
	t.Logf("Close with a 500 ms context on a frozen link: %s, %v", took, err)
	if took > 750*time.Millisecond {
		t.Fatalf("Close took %s with a 500 ms context", took)
	}
	_ = broker.ErrAbandoned
}
