package amqp

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/e2e/brokerenv"
)

// TestSubscribeRacingClose: a Subscribe whose channel opened while Close
// drained the subscriptions (Close took the live away before the
// Subscribe added its subscription) is refused with ErrClosed, instead of
// succeeding after Close with a subscription no drain will stop.
func TestSubscribeRacingClose(t *testing.T) {
	brokerenv.Need(t, "amqp", brokerenv.PingAMQP)
	a, err := New(brokerenv.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Connect(ctx, broker.Env{Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatal(err)
	}
	opened, release := make(chan struct{}), make(chan struct{})
	afterSubscribeOpen = func() { close(opened); <-release }
	t.Cleanup(func() { afterSubscribeOpen = nil })
	name := "test.subscribe.close." + time.Now().Format("150405.000000000")
	subscribed := make(chan error, 1)
	go func() {
		_, err := a.Subscribe(ctx, &broker.Channel{Name: name, Group: "g", MaxInFlight: 1,
			Handler: func(context.Context, *broker.Message) error { return nil }})
		subscribed <- err
	}()
	t.Cleanup(func() { removeTopology(t, name) })
	select {
	case <-opened:
	case err := <-subscribed:
		t.Fatalf("Subscribe returned before its channel opened: %v", err)
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-subscribed; !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Subscribe after Close: %v, want ErrClosed", err)
	}
	if n := a.subs.Len(); n != 0 {
		t.Fatalf("%d subscriptions left after Close", n)
	}
}

// removeTopology deletes the group queue and the exchange of channel name.
func removeTopology(t *testing.T, name string) {
	a, err := New(brokerenv.AMQPURL())
	if err != nil {
		t.Error(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Connect(ctx, broker.Env{Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Error(err)
		return
	}
	defer a.Close(ctx)
	_ = a.live.Load().topo.withChannel(ctx, func(ch *amqp091.Channel) error {
		_, _ = ch.QueueDelete(QueueName(name, "g"), false, false, false)
		return nil
	})
	_ = a.live.Load().topo.withChannel(ctx, func(ch *amqp091.Channel) error { return ch.ExchangeDelete(name, false, false) })
}

// TestPublisherOpensNothingAfterClose: a send in flight when the
// publisher closed opens no channel (Close would leave it to the
// connection's close), it fails with ErrClosed.
func TestPublisherOpensNothingAfterClose(t *testing.T) {
	brokerenv.Need(t, "amqp", brokerenv.PingAMQP)
	a := &Adapter{urls: []string{brokerenv.AMQPURL()}}
	s := newSession(a, slog.New(slog.DiscardHandler), "channels-publish-test")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.close(context.Background()) })
	p := newPublisher(s, 1)
	if err := p.close(ctx); err != nil {
		t.Fatal(err)
	}
	ch, _, err := p.shared[0].channel(ctx, s, false)
	if !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("a channel opened after the publisher closed: %v, %v", ch, err)
	}
}
