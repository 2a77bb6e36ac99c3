package channels_test

import (
	"context"
	"errors"
	"testing"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/memory"
)

// TestLateRegistration: Register after Start subscribes the new schema at
// once; a call that fails registers nothing.
func TestLateRegistration(t *testing.T) {
	ctx := context.Background()
	p, err := channels.New(channels.WithAdapter(memory.New(memory.WithBus(memory.NewBus()))))
	if err != nil {
		t.Fatal(err)
	}
	noop := channels.On(func(context.Context, *channels.Message) error { return nil })
	early := &svc{Name: "early", Channels: channels.Channels{"first": noop}}
	if err := p.Register(early); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(ctx)
	got := make(chan string, 1)
	late := &svc{Name: "late", Channels: channels.Channels{"second": channels.On(func(ctx context.Context, m *channels.Message) error {
		got <- string(m.Payload)
		return nil
	})}}
	if err := p.Register(late); err != nil {
		t.Fatalf("register after start: %v", err)
	}
	if late.SendToChannel == nil {
		t.Fatal("send field not injected")
	}
	if err := early.SendToChannel(ctx, "second", 42); err != nil {
		t.Fatal(err)
	}
	if m := <-got; m != "42" {
		t.Fatalf("payload %q", m)
	}
	// Same channel and group as "first": refused, and nothing injected.
	dup := &svc{Name: "early", Channels: channels.Channels{"first": noop}}
	if err := p.Register(dup); !errors.Is(err, channels.ErrInvalidSchema) {
		t.Fatalf("late duplicate: %v", err)
	}
	if dup.SendToChannel != nil {
		t.Fatal("a refused schema got its fields injected")
	}
	// Stop and start again: the late schema is part of the plugin now.
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := late.SendToChannel(ctx, "second", 43); err != nil {
		t.Fatal(err)
	}
	if m := <-got; m != "43" {
		t.Fatalf("payload after restart %q", m)
	}
}
