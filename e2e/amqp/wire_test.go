package amqp

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels"
	chamqp "github.com/microchannels/channels/amqp"
	"github.com/microchannels/channels/broker"
)

// TestWireNames: a subscription declares what @moleculer/channels 0.1.8
// declares (fanout exchange P.n, durable queue g.P.n bound to it, dead-letter
// fanout exchange bound to the dead-letter queue), and a send is a
// persistent message on the exchange with string headers and a message id.
// With QueueType classic the group queue is declared exactly as 0.1.8
// declares it (no arguments), so a Node member can share it; the default
// quorum queue has arguments a Node member must declare too.
func TestWireNames(t *testing.T) {
	needAMQP(t)
	ns := "ns" + unique("")
	ch, group, dlq, dlx := "orders", "billing", "FAILED", "DLX"
	full, queue := ns+"."+ch, "billing."+ns+"."+ch
	cleanup(t, []string{queue, ns + "." + dlq}, []string{full, ns + "." + dlq, ns + "." + dlx})
	startPlugin(t, &service{Name: "svc", Channels: channels.Channels{ch: {Group: group,
		DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq, ExchangeName: dlx},
		Handler:       func(context.Context, *channels.Message) error { return nil }}}},
		[]chamqp.Option{chamqp.WithQueueType(chamqp.QueueClassic)}, channels.WithNamespace(ns))

	c := rawConn(t)
	raw := rawChannel(t, c)
	// Passive declarations fail (and close the channel) when the entity is missing.
	if err := raw.ExchangeDeclarePassive(full, "fanout", true, false, false, false, nil); err != nil {
		t.Fatalf("exchange %s: %v", full, err)
	}
	if err := raw.ExchangeDeclarePassive(ns+"."+dlx, "fanout", true, false, false, false, nil); err != nil {
		t.Fatalf("dead-letter exchange: %v", err)
	}
	if _, err := raw.QueueDeclarePassive(queue, true, false, false, false, nil); err != nil {
		t.Fatalf("queue %s: %v", queue, err)
	}
	if _, err := raw.QueueDeclarePassive(ns+"."+dlq, true, false, false, false, nil); err != nil {
		t.Fatalf("dead-letter queue: %v", err)
	}
	// The same declarations as amqplib's defaults (durable, no arguments) succeed:
	// a Node service can share them.
	if _, err := raw.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatalf("redeclare queue as Node does: %v", err)
	}
	if err := raw.ExchangeDeclare(full, "fanout", true, false, false, false, nil); err != nil {
		t.Fatalf("redeclare exchange as Node does: %v", err)
	}

	// A message on the wire: bind a probe queue to the exchange and send.
	probe, err := raw.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.QueueBind(probe.Name, "", full, false, nil); err != nil {
		t.Fatal(err)
	}
	snd, _ := startPlugin(t, nil, nil, channels.WithNamespace(ns))
	if err := snd.SendToChannel(context.Background(), ch, map[string]int{"id": 1}, broker.WithHeader("k", "v"),
		chamqp.WithCorrelationID("corr-1"), chamqp.WithPriority(3)); err != nil {
		t.Fatal(err)
	}
	d := getOne(t, raw, probe.Name, 5*time.Second)
	if string(d.Body) != `{"id":1}` {
		t.Errorf("body %s", d.Body)
	}
	if d.DeliveryMode != amqp091.Persistent || d.MessageId == "" || d.CorrelationId != "corr-1" || d.Priority != 3 {
		t.Errorf("properties: mode %d id %q corr %q prio %d", d.DeliveryMode, d.MessageId, d.CorrelationId, d.Priority)
	}
	if d.Exchange != full {
		t.Errorf("exchange %q", d.Exchange)
	}
	if v, ok := d.Headers["k"].(string); !ok || v != "v" {
		t.Errorf("header k = %#v", d.Headers["k"])
	}
}

// TestWireRetryAndDeadLetterHeaders: a retry is a copy with
// x-redelivered-count (an integer, as Node writes it) and x-group, keeping
// the message's properties; the dead letter lands in the dead-letter queue
// with the original headers, x-original-*, x-redelivered-count and x-error-*.
func TestWireRetryAndDeadLetterHeaders(t *testing.T) {
	needAMQP(t)
	ch, dlq := unique("wire.retry"), unique("wire.DLQ")
	cleanup(t, []string{"g." + ch, dlq}, []string{ch, dlq})
	var runs atomic.Int32
	raws := make(chan amqp091.Delivery, 8)
	startPlugin(t, &service{Name: "svc", Channels: channels.Channels{ch: {Group: "g", MaxRetries: 1,
		DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq},
		Handler: func(_ context.Context, m *channels.Message) error {
			runs.Add(1)
			raws <- *m.Raw.(*amqp091.Delivery)
			return errors.New("Something happened")
		}}}}, nil)
	snd, _ := startPlugin(t, nil, nil)
	if err := snd.SendToChannel(context.Background(), ch, map[string]int{"id": 2}, broker.WithHeader("k", "v"),
		chamqp.WithCorrelationID("corr-2"), chamqp.WithMessageID("msg-2")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "two runs", func() bool { return runs.Load() == 2 })
	first, second := <-raws, <-raws
	if _, ok := first.Headers["x-redelivered-count"]; ok {
		t.Errorf("first delivery has x-redelivered-count %v", first.Headers["x-redelivered-count"])
	}
	if n, ok := second.Headers["x-redelivered-count"].(int32); !ok || n != 1 {
		t.Errorf("retry x-redelivered-count = %#v, want int32 1", second.Headers["x-redelivered-count"])
	}
	if second.Headers["x-group"] != "g" || second.Headers["k"] != "v" || second.Headers["x-error-message"] != "Something happened" {
		t.Errorf("retry headers %v", second.Headers)
	}
	if second.MessageId != "msg-2" || second.CorrelationId != "corr-2" || second.DeliveryMode != amqp091.Persistent {
		t.Errorf("retry properties: id %q corr %q mode %d", second.MessageId, second.CorrelationId, second.DeliveryMode)
	}
	raw := rawChannel(t, rawConn(t))
	d := getOne(t, raw, dlq, 10*time.Second)
	want := map[string]any{"k": "v", "x-original-channel": ch, "x-original-group": "g", "x-original-id": "msg-2",
		"x-error-message": "Something happened", "x-error-name": "Error", "x-redelivered-count": int32(1)}
	for k, v := range want {
		if d.Headers[k] != v {
			t.Errorf("dead letter %s = %#v, want %#v", k, d.Headers[k], v)
		}
	}
	if string(d.Body) != `{"id":2}` || d.MessageId != "msg-2" || d.CorrelationId != "corr-2" {
		t.Errorf("dead letter body %s id %q corr %q", d.Body, d.MessageId, d.CorrelationId)
	}
	consistently(t, 300*time.Millisecond, "no third run", func() bool { return runs.Load() == 2 })
}

// TestSendStraightToQueue: WithQueue publishes through the default exchange
// to a queue (Node's channelName "" with routingKey); the channel exchange is
// not involved.
func TestSendStraightToQueue(t *testing.T) {
	needAMQP(t)
	q := unique("direct.queue")
	cleanup(t, []string{q}, nil)
	raw := rawChannel(t, rawConn(t))
	if _, err := raw.QueueDeclare(q, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	snd, _ := startPlugin(t, nil, nil)
	if err := snd.SendToChannel(context.Background(), "label", []byte("hi"), broker.WithRaw(), chamqp.WithQueue(q)); err != nil {
		t.Fatal(err)
	}
	if d := getOne(t, raw, q, 5*time.Second); string(d.Body) != "hi" || d.Exchange != "" {
		t.Fatalf("got %q from exchange %q", d.Body, d.Exchange)
	}
	// Options of other types are refused.
	err := snd.SendToChannel(context.Background(), "label", 1, broker.WithAdapterOptions(struct{ X int }{1}))
	if !errors.Is(err, broker.ErrInvalidOption) {
		t.Fatalf("foreign option: %v", err)
	}
}
