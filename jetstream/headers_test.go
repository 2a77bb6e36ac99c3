package jetstream_test

import (
	"context"
	"errors"
	"testing"

	js "github.com/nats-io/nats.go/jetstream"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/jetstream"
)

// A send with a Status or Description header, or a name or value NATS
// cannot carry, is refused with a *broker.PublishError wrapping
// ErrHeaderRefused; nothing is stored.
func TestSendRefusesStatusHeaders(t *testing.T) {
	url, _ := startServer(t)
	_, j := jsOn(t, url)
	ctx := context.Background()
	snd := startPlugin(t, newAdapter(t, url, fast), nil)
	if err := snd.SendToChannel(ctx, "refuse", 1); err != nil {
		t.Fatal(err)
	}
	for _, h := range []map[string]string{
		{"Status": "503"}, {"Description": "x"}, {"a name": "v"}, {"k": "line\r\nbreak"}, {"k\x01": "v"},
	} {
		err := snd.SendToChannel(ctx, "refuse", []byte{}, channels.WithRaw(), channels.WithHeaders(h))
		var pe *broker.PublishError
		if !errors.As(err, &pe) || !errors.Is(err, jetstream.ErrHeaderRefused) {
			t.Fatalf("headers %q: %v, want a PublishError wrapping ErrHeaderRefused", h, err)
		}
	}
	if n := streamMsgs(j, "refuse"); n != 1 {
		t.Fatalf("stream holds %d messages, want 1", n)
	}
}

// Consumers get a finite MaxDeliver (the server's backstop); an existing
// consumer without one is given it.
func TestConsumerMaxDeliverBackstop(t *testing.T) {
	url, _ := startServer(t)
	_, j := jsOn(t, url)
	ctx := context.Background()
	if _, err := j.CreateStream(ctx, js.StreamConfig{Name: "backstop", Subjects: []string{"backstop"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := j.CreateConsumer(ctx, "backstop", js.ConsumerConfig{Durable: "old", AckPolicy: js.AckExplicitPolicy,
		FilterSubject: "backstop", MaxDeliver: -1}); err != nil {
		t.Fatal(err)
	}
	noop := func(context.Context, *channels.Message) error { return nil }
	startPlugin(t, newAdapter(t, url, fast), &service{Name: "b", Channels: channels.Channels{
		"backstop": {Group: "old", Handler: noop},
	}})
	startPlugin(t, newAdapter(t, url, fast), &service{Name: "b2", Channels: channels.Channels{
		"backstop": {Group: "new", Handler: noop},
	}})
	for _, d := range []string{"old", "new"} {
		c, err := j.Consumer(ctx, "backstop", d)
		if err != nil {
			t.Fatal(err)
		}
		if md := c.CachedInfo().Config.MaxDeliver; md != jetstream.DefaultMaxDeliver {
			t.Fatalf("consumer %s: MaxDeliver %d, want %d", d, md, jetstream.DefaultMaxDeliver)
		}
	}
}
