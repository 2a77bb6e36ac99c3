package amqp

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/microchannels/channels/broker"
)

// routedSend publishes payload to channel with broker.PublishOptions.Routed.
func routedSend(ctx context.Context, a broker.Adapter, channel, payload string) error {
	o, err := broker.NewPublishOptions()
	if err != nil {
		return err
	}
	o.Routed = true
	return a.Publish(ctx, channel, &broker.Outgoing{Payload: []byte(payload), Options: o})
}

// A routed send that no queue receives fails with ErrPublish and
// ErrNotFound (RabbitMQ confirms an unroutable message that is not
// mandatory): to an exchange without a queue, to one that does not exist
// (which it does not declare), and in a batch; one to a dead-letter-like
// layout (fanout exchange named like its queue) is stored.
func TestRoutedSend(t *testing.T) {
	needAMQP(t)
	a := toolAdapter(t)
	var ad broker.Adapter = a
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	empty, missing, parked := unique("routed-empty"), unique("routed-missing"), unique("routed-parked")
	cleanup(t, []string{parked}, []string{empty, missing, parked})

	ch := rawChannel(t, rawConn(t))
	if err := ch.ExchangeDeclare(empty, "fanout", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclare(parked, "fanout", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(parked, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(parked, "", parked, false, nil); err != nil {
		t.Fatal(err)
	}

	notFound := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, broker.ErrPublish) || !errors.Is(err, broker.ErrNotFound) {
			t.Fatalf("%s: got %v, want an error wrapping ErrPublish and ErrNotFound", what, err)
		}
	}
	notFound("exchange without a queue", routedSend(ctx, ad, empty, "lost"))
	notFound("missing exchange", routedSend(ctx, ad, missing, "lost"))
	if err := ch.ExchangeDeclarePassive(missing, "fanout", true, false, false, false, nil); err == nil {
		t.Fatalf("a routed send declared the exchange %q", missing)
	}
	ch = rawChannel(t, rawConn(t)) // the passive declaration closed it

	if err := routedSend(ctx, ad, parked, "kept"); err != nil {
		t.Fatalf("routed send to a dead-letter layout: %v", err)
	}
	if d := getOne(t, ch, parked, 5*time.Second); string(d.Body) != "kept" {
		t.Fatalf("stored %q, want kept", d.Body)
	}

	o, _ := broker.NewPublishOptions()
	o.Routed = true
	errs := a.PublishBatch(ctx, empty, []*broker.Outgoing{
		{Payload: []byte("a"), Options: o}, {Payload: []byte("b"), Options: o},
	})
	if len(errs) != 2 {
		t.Fatalf("batch to an exchange without a queue: %v, want two errors", errs)
	}
	for _, err := range errs {
		notFound("batch", err)
	}
	// Without Routed the adapter's sends stay as they were: confirmed.
	if err := a.Publish(ctx, empty, &broker.Outgoing{Payload: []byte("dropped")}); err != nil {
		t.Fatalf("plain send: %v", err)
	}
}
