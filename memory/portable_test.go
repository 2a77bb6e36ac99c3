package memory_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/memory"
)

// TestStartPositions: a channel's first group starts where its start
// position says among the messages the bus kept for it.
func TestStartPositions(t *testing.T) {
	bus := memory.NewBus()
	channelstest.StartPositions(t, func() (broker.Adapter, error) { return memory.New(memory.WithBus(bus)), nil })
}

// TestStartPositionOfALaterGroup: once a channel has a group the bus keeps
// no history: a later group starts at the newest messages or at a time not
// yet past; the oldest and a past time are refused at Subscribe.
func TestStartPositionOfALaterGroup(t *testing.T) {
	ctx := context.Background()
	bus := memory.NewBus()
	a := memory.New(memory.WithBus(bus))
	if err := a.Connect(ctx, broker.Env{}); err != nil {
		t.Fatal(err)
	}
	defer a.Close(ctx)
	noop := func(context.Context, *broker.Message) error { return nil }
	sub := func(group string, start broker.StartPosition) error {
		s, err := a.Subscribe(ctx, &broker.Channel{Name: "c", Group: group, MaxInFlight: 1, Handler: noop,
			Retry: broker.RetryPolicy{Backoff: broker.DefaultBackoff}, Start: start})
		if err == nil {
			t.Cleanup(func() { _ = s.Drain(ctx) })
		}
		return err
	}
	if err := sub("first", broker.StartOldest); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		group string
		start broker.StartPosition
		ok    bool
	}{
		{"newest", broker.StartNewest, true},
		{"default", broker.StartPosition{}, true},
		{"oldest", broker.StartOldest, false},
		{"past", broker.StartAt(time.Now().Add(-time.Minute)), false},
		{"future", broker.StartAt(time.Now().Add(time.Minute)), true},
	} {
		err := sub(tt.group, tt.start)
		var ue *broker.UnsupportedError
		if tt.ok && err != nil || !tt.ok && (!errors.As(err, &ue) || !errors.Is(err, broker.ErrUnsupported)) {
			t.Errorf("a later group starting %s: %v", tt.start, err)
		}
	}
}

// TestStartAtInTheFuture: a later group starting at a time not yet past
// sees only the messages published from then on.
func TestStartAtInTheFuture(t *testing.T) {
	bus := memory.NewBus()
	first, later := &channelstest.Recorder{}, &channelstest.Recorder{}
	ch := channelstest.Unique("c")
	at := time.Now().Add(50 * time.Millisecond)
	p := channelstest.StartPlugin(t, memory.New(memory.WithBus(bus)), &channelstest.Service{Name: "s", Channels: channels.Channels{
		ch: {Group: "first", Handler: first.Handle}}})
	channelstest.StartPlugin(t, memory.New(memory.WithBus(bus)), &channelstest.Service{Name: "s", Channels: channels.Channels{
		ch: {Group: "later", Start: channels.StartAt(at), Handler: later.Handle}}})
	if err := p.SendToChannel(context.Background(), ch, 1); err != nil {
		t.Fatal(err)
	}
	channelstest.EventuallyTrue(t, time.Second, "the clock passes the start time", func() bool { return time.Now().After(at) })
	if err := p.SendToChannel(context.Background(), ch, 2); err != nil {
		t.Fatal(err)
	}
	channelstest.EventuallyTrue(t, time.Second, "both groups get 2", func() bool { return first.Count() == 2 && later.Count() == 1 })
	var n int
	if err := later.All()[0].Decode(&n); err != nil || n != 2 {
		t.Fatalf("the later group got %d (%v), want 2", n, err)
	}
}

// TestKeyCarried: the portable key travels with the message.
func TestKeyCarried(t *testing.T) {
	bus := memory.NewBus()
	channelstest.KeyCarried(t, func() (broker.Adapter, error) { return memory.New(memory.WithBus(bus)), nil })
}
