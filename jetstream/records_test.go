package jetstream_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/jetstream"
)

// RemoveChannel, with a subscriber of the same adapter running, removes
// the stream for good (the subscriber does not create it again), its
// failure records, and the adapter's knowledge of the stream: a later
// send from the same adapter creates the stream again, and the new
// message with the sequence of a removed one does not inherit its record.
func TestRemoveChannelClearsRecords(t *testing.T) {
	url, _ := startServer(t)
	_, j := jsOn(t, url)
	ctx := context.Background()
	var mu sync.Mutex
	attempts := map[string][]int{}
	handler := func(_ context.Context, m *channels.Message) error {
		var body string
		_ = m.Decode(&body)
		mu.Lock()
		attempts[body] = append(attempts[body], m.Attempt)
		n := len(attempts[body])
		mu.Unlock()
		if body == "old" || n == 1 {
			return errors.New("fails")
		}
		return nil
	}
	seen := func(body string) []int {
		mu.Lock()
		defer mu.Unlock()
		return append([]int(nil), attempts[body]...)
	}
	ch := channels.Channel{Group: "g", MaxRetries: 1, Backoff: broker.ConstantBackoff(2 * time.Second), Handler: handler}
	a := newAdapter(t, url, fast)
	p := startPlugin(t, a, &service{Name: "rm", Channels: channels.Channels{"rm.topic": ch}})
	if err := p.SendToChannel(ctx, "rm.topic", "old"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "old failed once", func() bool { return len(seen("old")) == 1 })
	if err := a.RemoveChannel(ctx, "rm.topic"); err != nil {
		t.Fatal(err)
	}
	consistently(t, 2*time.Second, "the stream stays removed", func() bool { return streamMsgs(j, "rm_topic") == -1 })
	// A send from the same adapter creates the stream again.
	if err := p.SendToChannel(ctx, "rm.topic", "new"); err != nil {
		t.Fatalf("send after RemoveChannel: %v", err)
	}
	o := fast
	o.DeliverPolicy = jetstream.DeliverAll
	startPlugin(t, newAdapter(t, url, o), &service{Name: "rm2", Channels: channels.Channels{"rm.topic": ch}})
	eventually(t, 10*time.Second, "new ran twice", func() bool { return len(seen("new")) == 2 })
	if got := seen("new"); got[0] != 1 || got[1] != 2 {
		t.Fatalf("attempts of the new message %v, want [1 2]", got)
	}
}

// RemoveChannel of one channel of a shared stream (StreamOptions with a
// name and wider subjects) refuses, and the stream keeps the other
// channel's messages.
func TestRemoveChannelKeepsASharedStream(t *testing.T) {
	url, _ := startServer(t)
	_, j := jsOn(t, url)
	ctx := context.Background()
	o := fast
	o.Stream.Name, o.Stream.Subjects = "SHARED", []string{"shop.>"}
	a := newAdapter(t, url, o)
	never := func(context.Context, *channels.Message) error { return errors.New("kept pending") }
	p := startPlugin(t, a, &service{Name: "shop", Channels: channels.Channels{
		"shop.orders": {Group: "g1", MaxRetries: channels.NoRetries, Handler: never},
		"shop.paid":   {Group: "g2", Handler: func(context.Context, *channels.Message) error { return nil }}}})
	if err := p.SendToChannel(ctx, "shop.orders", "m"); err != nil {
		t.Fatal(err)
	}
	err := a.RemoveChannel(ctx, "shop.orders")
	if !errors.Is(err, broker.ErrUnsupported) {
		t.Fatalf("RemoveChannel of a shared stream's channel: %v", err)
	}
	if n := streamMsgs(j, "SHARED"); n < 1 {
		t.Fatalf("the shared stream is gone (%d) after the refused removal", n)
	}
}
