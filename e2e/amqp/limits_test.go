package amqp

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"

	"github.com/microchannels/channels"
	chamqp "github.com/microchannels/channels/amqp"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/e2e/brokerenv"
)

// TestHeaderOverFrameMaxRefused: a send whose headers do not fit in one
// frame (frame_max 128 KiB) is refused before it reaches RabbitMQ, with a
// *broker.PublishError wrapping broker.ErrTooLarge, through the plugin and
// through Adapter.Publish. The connection stays up: a message running
// meanwhile on the same adapter is acked once and never runs again.
func TestHeaderOverFrameMaxRefused(t *testing.T) {
	needAMQP(t)
	ch := unique("limits.frame")
	cleanup(t, []string{"g." + ch}, []string{ch})
	var runs atomic.Int64
	release := make(chan struct{})
	p, a := startPlugin(t, &service{Name: "svc", Channels: channels.Channels{ch: {Group: "g",
		Handler: func(ctx context.Context, m *channels.Message) error {
			if runs.Add(1) == 1 {
				<-release
			}
			return nil
		}}}}, nil)
	if lim := a.Limits(); lim.MaxHeaderBytes < 100_000 || lim.MaxHeaderBytes > 131072 {
		t.Fatalf("Limits %+v", lim)
	}
	conn := a.Connection()
	ctx := context.Background()
	if err := p.SendToChannel(ctx, ch, "running"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the first message running", func() bool { return runs.Load() == 1 })
	big := strings.Repeat("x", 200<<10)
	err := p.SendToChannel(ctx, ch, "big", broker.WithHeader("big", big))
	var pe *broker.PublishError
	if !errors.As(err, &pe) || !errors.Is(err, broker.ErrTooLarge) {
		t.Fatalf("plugin send with a 200 KiB header: %v", err)
	}
	err = a.Publish(ctx, ch, &broker.Outgoing{Payload: []byte(`"big"`), Headers: map[string]string{"big": big}})
	if !errors.As(err, &pe) || !errors.Is(err, broker.ErrTooLarge) {
		t.Fatalf("Adapter.Publish with a 200 KiB header: %v", err)
	}
	close(release)
	if err := p.SendToChannel(ctx, ch, "after"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the message after", func() bool { return runs.Load() == 2 })
	consistently(t, time.Second, "no redelivery of the running message", func() bool { return runs.Load() == 2 })
	if a.Connection() != conn || conn.IsClosed() {
		t.Fatal("the connection was closed")
	}
}

// TestLargeHeaderAndLargeError: a message with a 75 KiB header whose
// handler fails with a 30 KiB error is retried and dead-lettered with its
// own (trimmed) error, not ErrMaxDeliveries: the retry copies and the dead
// letter fit in frame_max, and no connection is lost.
func TestLargeHeaderAndLargeError(t *testing.T) {
	needAMQP(t)
	ch, dlq := unique("limits.retry"), unique("limits.DLQ")
	cleanup(t, []string{"g." + ch, dlq}, []string{ch, dlq})
	var lost atomic.Int64
	log := slog.New(countingHandler{texts: []string{"connection lost", "channel lost"}, n: &lost})
	var runs atomic.Int64
	huge := "boom " + strings.Repeat("e", 30<<10)
	dead := &channelstest.Recorder{}
	p, _ := startPlugin(t, &service{Name: "svc", Channels: channels.Channels{
		ch: {Group: "g", MaxRetries: 2, DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq},
			Handler: func(context.Context, *channels.Message) error { runs.Add(1); return errors.New(huge) }},
		dlq: {Group: "reader", Handler: dead.Handle}}}, nil, channels.WithLogger(log))
	if err := p.SendToChannel(context.Background(), ch, 1, broker.WithHeader("big", strings.Repeat("h", 75<<10))); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the dead letter", func() bool { return dead.Count() == 1 })
	m := dead.All()[0]
	if runs.Load() != 3 {
		t.Errorf("%d runs, want 3", runs.Load())
	}
	if msg := m.Headers[broker.HeaderErrorMessage]; !strings.HasPrefix(msg, "boom eee") {
		t.Errorf("x-error-message %.80q", msg)
	}
	if len(m.Headers["big"]) != 75<<10 {
		t.Errorf("header big: %d bytes", len(m.Headers["big"]))
	}
	if n := lost.Load(); n != 0 {
		t.Errorf("%d connections or consumer channels lost", n)
	}
}

// TestMaxInFlightOverQos: basic.qos takes a 16-bit prefetch count, so
// MaxInFlight 65,536 would be 0 (no limit at all): the channel is refused
// with ErrInvalidOption, by Register where it is declared, and by
// Subscribe.
func TestMaxInFlightOverQos(t *testing.T) {
	needAMQP(t)
	ch := unique("limits.qos")
	cleanup(t, []string{"g." + ch}, []string{ch})
	a, err := chamqp.New(brokerenv.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	p, err := channels.New(channels.WithAdapter(a))
	if err != nil {
		t.Fatal(err)
	}
	noop := func(context.Context, *channels.Message) error { return nil }
	if err := p.Register(&service{Name: "svc", Channels: channels.Channels{ch: {Group: "g", MaxInFlight: 65536,
		Handler: noop}}}); !errors.Is(err, broker.ErrInvalidOption) {
		t.Fatalf("Register with MaxInFlight 65536: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Connect(ctx, broker.Env{}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = a.Close(ctx) }()
	_, err = a.Subscribe(ctx, &broker.Channel{Name: ch, Group: "g", MaxInFlight: 65536, Handler: noop,
		Retry: broker.RetryPolicy{Backoff: broker.DefaultBackoff}})
	if !errors.Is(err, broker.ErrInvalidOption) {
		t.Fatalf("Subscribe with MaxInFlight 65536: %v", err)
	}
}

// TestLargeErrorEveryRetry: a handler that fails every run with a 200 KiB
// error is retried MaxRetries times, then dead-lettered with its own
// (trimmed) error: each retry copy's x-error-* headers replace the last
// run's and are fitted beside the message's other headers only.
func TestLargeErrorEveryRetry(t *testing.T) {
	needAMQP(t)
	ch, dlq := unique("limits.bigerr"), unique("limits.bigerr.DLQ")
	cleanup(t, []string{"g." + ch, dlq}, []string{ch, dlq})
	var runs atomic.Int64
	huge := strings.Repeat("e", 200<<10)
	dead := &channelstest.Recorder{}
	p, _ := startPlugin(t, &service{Name: "svc", Channels: channels.Channels{
		ch: {Group: "g", MaxRetries: 2, DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq},
			Handler: func(context.Context, *channels.Message) error { runs.Add(1); return errors.New(huge) }},
		dlq: {Group: "reader", Handler: dead.Handle}}}, nil)
	if err := p.SendToChannel(context.Background(), ch, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the dead letter", func() bool { return dead.Count() == 1 })
	if runs.Load() != 3 {
		t.Errorf("%d runs, want 3", runs.Load())
	}
	m := dead.All()[0]
	if msg := m.Headers[broker.HeaderErrorMessage]; !strings.HasPrefix(msg, "eeee") || m.Headers[broker.HeaderErrorTrimmed] == "" {
		t.Errorf("x-error-message %.40q, x-error-trimmed %q", msg, m.Headers[broker.HeaderErrorTrimmed])
	}
}
