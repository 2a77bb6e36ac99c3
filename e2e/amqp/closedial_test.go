package amqp

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	chamqp "github.com/microchannels/channels/amqp"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest/linkfault"
	"github.com/microchannels/channels/e2e/brokerenv"
)

// brokerConnections counts the connections RabbitMQ lists with name.
func brokerConnections(t *testing.T, name string) int {
	t.Helper()
	out, err := rabbitmqctl("list_connections", "name", "client_properties")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(out, name)
}

// TestCloseDuringConsumerDial: Close while the consuming connection is
// being dialed (a slow link: each byte takes 700 ms each way) returns by
// its context instead of waiting for the dial, the Subscribe fails, and
// once the dial ends nothing stays open: RabbitMQ lists none of the
// adapter's connections.
func TestCloseDuringConsumerDial(t *testing.T) {
	needAMQP(t)
	brokerenv.Need(t, "rabbitmqctl", func() error { _, err := rabbitmqctl("status"); return err })
	link := linkfault.New(t, "127.0.0.1:5672")
	name := unique("closedial")
	dials := make(chan struct{}, 8)
	a, err := chamqp.New("amqp://guest:guest@"+link.Addr()+"/", chamqp.WithConfig(amqp091.Config{
		Properties: amqp091.Table{"connection_name": name},
		Dial: func(network, addr string) (net.Conn, error) {
			dials <- struct{}{}
			return net.DialTimeout(network, addr, 5*time.Second)
		}}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.Connect(ctx, broker.Env{}); err != nil {
		t.Fatal(err)
	}
	<-dials
	link.Latency(700 * time.Millisecond)
	subscribed := make(chan error, 1)
	go func() {
		_, err := a.Subscribe(ctx, &broker.Channel{Name: unique("closedial.ch"), Group: "g", MaxInFlight: 1,
			Handler: func(context.Context, *broker.Message) error { return nil }})
		subscribed <- err
	}()
	select {
	case <-dials: // the consuming connection is being dialed
	case err := <-subscribed:
		t.Fatalf("Subscribe before its dial: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no consumer dial")
	}
	cctx, ccancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	_, took := timed(func() error { return a.Close(cctx) })
	ccancel()
	if took > 500*time.Millisecond+frozenGrace {
		t.Errorf("Close during a consumer dial took %v", took)
	}
	select {
	case err := <-subscribed:
		if err == nil {
			t.Error("Subscribe succeeded after Close")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Subscribe did not return")
	}
	link.Heal()
	eventually(t, 30*time.Second, "no connection of the adapter left", func() bool { return brokerConnections(t, name) == 0 })
}

// TestCloseRacingConsumerDials: Close racing Subscribes whose consuming
// connection is being dialed, repeated with the Close at varying points of
// the dial, leaves none of the adapters' connections open on RabbitMQ.
func TestCloseRacingConsumerDials(t *testing.T) {
	needAMQP(t)
	brokerenv.Need(t, "rabbitmqctl", func() error { _, err := rabbitmqctl("status"); return err })
	name := unique("closerace")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range 20 {
		a, err := chamqp.New(brokerenv.AMQPURL(), chamqp.WithConfig(amqp091.Config{
			Properties: amqp091.Table{"connection_name": name}}))
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Connect(ctx, broker.Env{}); err != nil {
			t.Fatal(err)
		}
		subscribed := make(chan struct{})
		go func() {
			defer close(subscribed)
			sub, err := a.Subscribe(ctx, &broker.Channel{Name: unique("closerace.ch"), Group: "g", MaxInFlight: 1,
				Handler: func(context.Context, *broker.Message) error { return nil }})
			if err == nil {
				_ = sub.Drain(ctx)
			}
		}()
		// From before the dial to after it: the dial takes a few round
		// trips on loopback.
		for range i * 200 {
			_ = a.String()
		}
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		_ = a.Close(cctx)
		ccancel()
		<-subscribed
	}
	eventually(t, 30*time.Second, "no connection of the adapters left", func() bool { return brokerConnections(t, name) == 0 })
}
