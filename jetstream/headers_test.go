package jetstream_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	js "github.com/nats-io/nats.go/jetstream"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/jetstream"
)

// A send with a Status header on an empty payload, or a name or value NATS
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
		{"Status": "503"}, {"Status": "100", "Description": "x"}, {"a name": "v"}, {"k": "line\r\nbreak"}, {"k\x01": "v"},
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

// An existing consumer without a subject filter (it would read every
// channel of a shared stream) is given the channel's filter.
func TestConsumerWithoutFilterGetsOne(t *testing.T) {
	url, _ := startServer(t)
	_, j := jsOn(t, url)
	ctx := context.Background()
	if _, err := j.CreateStream(ctx, js.StreamConfig{Name: "MIX", Subjects: []string{"mix.*"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := j.CreateConsumer(ctx, "MIX", js.ConsumerConfig{Durable: "g", AckPolicy: js.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	o := fast
	o.Stream = jetstream.StreamOptions{Name: "MIX", Subjects: []string{"mix.*"}}
	var got counter
	startPlugin(t, newAdapter(t, url, o), &service{Name: "mix", Channels: channels.Channels{
		"mix.a": {Group: "g", Handler: func(context.Context, *channels.Message) error { got.inc(); return nil }}}})
	c, err := j.Consumer(ctx, "MIX", "g")
	if err != nil {
		t.Fatal(err)
	}
	if f := c.CachedInfo().Config.FilterSubject; f != "mix.a" {
		t.Fatalf("consumer filter %q, want mix.a", f)
	}
	snd := startPlugin(t, newAdapter(t, url, o), nil)
	for _, ch := range []string{"mix.b", "mix.a"} {
		if err := snd.SendToChannel(ctx, ch, 1); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, "mix.a delivered", func() bool { return got.get() >= 1 })
	consistently(t, 500*time.Millisecond, "mix.b not delivered", func() bool { return got.get() == 1 })
}

// A send whose headers JetStream would refuse (over 64 KiB) is refused
// before the server with ErrTooLarge; a dead letter whose error headers
// would be over it is trimmed to fit, and stored.
func TestHeaderLimit(t *testing.T) {
	url, _ := startServer(t)
	_, j := jsOn(t, url)
	ctx := context.Background()
	big := strings.Repeat("h", 100<<10)
	startPlugin(t, newAdapter(t, url, fast), &service{Name: "hl", Channels: channels.Channels{"hl.topic": {Group: "g",
		MaxRetries: channels.NoRetries, DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: "HL_DLQ"},
		Handler: func(context.Context, *channels.Message) error { return errors.New(big) }}}})
	snd := startPlugin(t, newAdapter(t, url, fast), nil)
	err := snd.SendToChannel(ctx, "hl.topic", 1, channels.WithHeader("big", big))
	var pe *broker.PublishError
	if !errors.Is(err, broker.ErrTooLarge) || !errors.As(err, &pe) {
		t.Fatalf("send with 100 KiB of headers: %v, want a PublishError wrapping ErrTooLarge", err)
	}
	if err := snd.SendToChannel(ctx, "hl.topic", 2, channels.WithHeader("trace", "abc")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "dead letter stored", func() bool { return streamMsgs(j, "HL_DLQ") == 1 })
	st, _ := j.Stream(ctx, "HL_DLQ")
	m, err := st.GetMsg(ctx, 1)
	if err != nil || m.Header.Get("trace") != "abc" || m.Header.Get("x-error-trimmed") == "" {
		t.Fatalf("dead letter: %v %v", m.Header.Get("x-error-trimmed"), err)
	}
}

// Only what NATS clients misread is refused: a Description header alone,
// a Status header under another case, and a Status header on a message
// with a payload are sent and reach the handler as they are.
func TestSendKeepsHeadersNATSReadsAsMessages(t *testing.T) {
	url, _ := startServer(t)
	ctx := context.Background()
	got := make(chan map[string]string, 4)
	startPlugin(t, newAdapter(t, url, fast), &service{Name: "hk", Channels: channels.Channels{"keep.hdr": {Group: "g",
		Handler: func(_ context.Context, m *channels.Message) error { got <- m.Headers; return nil }}}})
	snd := startPlugin(t, newAdapter(t, url, fast), nil)
	sends := []struct {
		payload []byte
		h       map[string]string
	}{
		{[]byte{}, map[string]string{"Description": "d"}},
		{[]byte{}, map[string]string{"status": "503"}},
		{[]byte("x"), map[string]string{"Status": "503", "Description": "d"}},
	}
	for _, s := range sends {
		if err := snd.SendToChannel(ctx, "keep.hdr", s.payload, channels.WithRaw(), channels.WithHeaders(s.h)); err != nil {
			t.Fatalf("headers %q: %v", s.h, err)
		}
	}
	for range sends {
		select {
		case h := <-got:
			if h["Description"] == "" && h["status"] == "" {
				t.Fatalf("headers lost: %v", h)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a message with ordinary headers never reached the handler")
		}
	}
}
